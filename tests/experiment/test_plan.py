"""The experiment as a plan of runs (issue 28): every run named before any trains, with an id that
changes with anything that changes the run; compare's training options from flags and --config
files, recorded in results.json; `compare --dry-run` prints the plan and trains nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from rewardlab.cli.experiment import compare_config
from rewardlab.cli.main import build_parser, main
from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import RewardlabError
from rewardlab.experiment.compare import plan_comparison
from rewardlab.experiment.compare_config import CompareConfig, Condition, preset_training
from rewardlab.experiment.plan import ExperimentData, RunSpec, plan_experiment, summarize_plan
from rewardlab.flags.selection import SOFT_SMOOTHING, FlagSpec
from rewardlab.store.store import Store

CONDITIONS = [Condition("unfiltered", "all", None), Condition("clean-remove", "clean", "remove"),
              Condition("clean-flip", "clean", "flip"), Condition("clean-soft", "clean", "soft"),
              Condition("random", "random", None)]
POOL = [PreferencePair(i, "train", f"prompt {i}", f"good {i}", f"bad {i}", example_id=100 + i)
        for i in range(20)]
FLAGGED = frozenset({101, 105, 110})
SYN = "synthetic:n=80,noise=0.2,seed=0"
BOW = CompareConfig(training=preset_training(model="bow"))


def _data(**changes: Any) -> ExperimentData:
    base = ExperimentData(pool=POOL, fingerprint="data-1", conditions=CONDITIONS, seeds=[0, 1],
                          flagged=FLAGGED)
    return dataclasses.replace(base, **changes)


def _plan(config: CompareConfig | None = None, **changes: Any) -> list[RunSpec]:
    return plan_experiment(config or BOW, _data(**changes))


# ---------------------------------------------------------------- the plan itself

def test_each_run_names_its_pairs_labels_smoothing_and_config() -> None:
    plan = _plan()
    assert [(r.group, r.seed) for r in plan] == [(c.name, s) for c in CONDITIONS for s in (0, 1)]
    by = {(r.group, r.seed): r for r in plan}
    everyone = tuple(range(100, 120))
    kept = tuple(i for i in everyone if i not in FLAGGED)
    assert by["unfiltered", 0].pair_ids == everyone and by["unfiltered", 0].flipped_ids == ()
    assert by["clean-remove", 1].pair_ids == kept and by["clean-remove", 1].smoothing is None
    assert by["clean-flip", 0].pair_ids == everyone
    assert by["clean-flip", 0].flipped_ids == tuple(sorted(FLAGGED))
    soft = by["clean-soft", 0]
    assert soft.flipped_ids == () and soft.smoothing is not None
    assert [i for i, s in zip(soft.pair_ids, soft.smoothing) if s == SOFT_SMOOTHING] == sorted(FLAGGED)
    assert sum(soft.smoothing) == pytest.approx(3 * SOFT_SMOOTHING)
    # random drops as many pairs as clean, a different draw per seed
    rand0, rand1 = by["random", 0], by["random", 1]
    assert len(rand0.pair_ids) == len(rand1.pair_ids) == len(kept) and rand0.pair_ids != rand1.pair_ids
    # each run trains with its own seed; everything else is the experiment's TrainConfig
    assert [r.train_config.seed for r in plan] == [0, 1] * len(CONDITIONS)
    assert {r.train_config.model for r in plan} == {"bow"}
    assert {r.pair_steps for r in plan} == {20, 17}  # one epoch


def test_the_id_is_stable_and_changes_with_anything_that_changes_the_run() -> None:
    plan = _plan()
    ids = [r.id for r in plan]
    assert len(set(ids)) == len(ids) and all(len(i) == 64 for i in ids)
    assert [r.id for r in _plan()] == ids  # the same inputs: the same ids, call after call
    lr = _plan(CompareConfig(training=preset_training(model="bow", lr=1e-3)))
    assert not set(r.id for r in lr) & set(ids)  # another learning rate: every run is another
    other_data = _plan(fingerprint="data-2")
    assert not set(r.id for r in other_data) & set(ids)
    # one more flagged pair changes the runs that act on the flags, and only those
    more = {(r.group, r.seed): r.id for r in _plan(flagged=FLAGGED | {119})}
    for run in plan:
        changed = more[run.group, run.seed] != run.id
        assert changed == (run.group != "unfiltered"), run.group


def test_dose_and_ablation_arms_join_the_plan_in_training_order() -> None:
    scores = {p.example_id: float(i) for i, p in enumerate(POOL) if p.example_id is not None}
    config = dataclasses.replace(BOW, ablation=True, treatments=("remove",))
    plan = plan_experiment(config, _data(
        conditions=CONDITIONS[:2], rank_by="score", fractions=[0.1, 0.25], scores=scores,
        flagged_by={"a": {101, 105}, "b": {110}}))
    stages = [r.stage for r in plan]
    assert stages == ["condition"] * 4 + ["dose"] * 8 + ["ablation"] * 8
    dose = [r for r in plan if r.stage == "dose"]
    assert [(r.fraction, r.arm, r.seed) for r in dose] == [
        (f, arm, s) for f in (0.1, 0.25) for arm in ("detector", "random") for s in (0, 1)]
    top2 = {119, 118}  # the two highest scores: 10% of 20 pairs
    for run in dose[:2]:  # the detector's arm: the same top pairs for every seed
        assert set(range(100, 120)) - set(run.pair_ids) == top2
    assert {len(r.pair_ids) for r in dose[2:4]} == {18} and dose[2].pair_ids != dose[3].pair_ids
    ablation = [(r.group, r.arm, len(r.pair_ids)) for r in plan if r.stage == "ablation"]
    assert ablation == [("ablation-a", "clean", 18)] * 2 + [("ablation-a-random", "random", 18)] * 2 \
        + [("ablation-b", "clean", 19)] * 2 + [("ablation-b-random", "random", 19)] * 2


def test_the_plan_summary_counts_runs_pairs_and_pair_steps() -> None:
    plan = _plan()
    summary = summarize_plan(plan, {plan[0].id}, speed=10.0)
    assert (summary["runs"], summary["stored"], summary["to_train"]) == (10, 1, 9)
    assert (summary["pairs_min"], summary["pairs_max"]) == (17, 20)
    total = sum(len(r.pair_ids) for r in plan)
    assert summary["pair_steps"] == total == 20 * 6 + 17 * 4
    assert summary["pair_steps_to_train"] == total - 20
    assert summary["estimate_seconds"] == pytest.approx((total - 20) / 10.0)
    assert [(g["group"], g["runs"], g["stored"]) for g in summary["groups"]] == [
        ("unfiltered", 2, 1), ("clean-remove", 2, 0), ("clean-flip", 2, 0), ("clean-soft", 2, 0),
        ("random", 2, 0)]


# ---------------------------------------------------------------- the training options

def test_presets_merge_once_and_given_options_win() -> None:
    quick = preset_training()
    assert (quick.model, quick.lr, quick.seed) == ("minilm", 1e-4, 0)  # the preset's tuned lr
    assert CompareConfig().training == quick  # Python's default: the quick preset's TrainConfig
    assert preset_training(lr=3e-4).lr == 3e-4  # given: the preset's yields
    assert preset_training(model="bow").lr is None  # the tuned lr is minilm's only
    strength = preset_training("strength", batch_size=4)
    assert (strength.model, strength.max_length, strength.batch_size) == ("bow", 512, 4)
    assert preset_training("strength", epochs=3, max_length=64).epochs == 3
    with pytest.raises(RewardlabError, match="compare.s own"):
        preset_training(seed=3)


def _compare(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str,
             out: str = "out") -> dict[str, Any]:
    argv = ["compare", "--train", SYN, "--test-fraction", "0.25", "--model", "bow",
            "--conditions", "unfiltered", "--detectors", "length_ratio", "--seeds", "1",
            "--max-pairs", "0", "--precision", "fp32", "-o", str(tmp_path / out),
            "--db", f"sqlite:///{tmp_path}/c.db", "--json", *extra]
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_training_flags_reach_every_run_and_results_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = _compare(tmp_path, capsys, "--lr", "3e-4", "--batch-size", "4", "--max-steps", "3")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    for block in (saved["config"]["training"], saved["config"]["train_config"]):
        assert (block["lr"], block["batch_size"], block["max_steps"]) == (3e-4, 4, 3)
        assert (block["model"], block["precision"]) == ("bow", "fp32")
    assert summary["runs_planned"] == saved["runs_planned"] == 1
    assert summary["runs_reused"] == saved["runs_reused"] == 0
    # the same options again: the stored run is reused; another lr is another run
    assert _compare(tmp_path, capsys, "--lr", "3e-4", "--batch-size", "4", "--max-steps", "3",
                    out="again")["runs_reused"] == 1
    assert _compare(tmp_path, capsys, "--lr", "1e-3", "--batch-size", "4", "--max-steps", "3",
                    out="other")["runs_reused"] == 0


def test_a_config_file_sets_compare_and_training_options_and_flags_override_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"seeds": 2, "conditions": ["unfiltered", "random"],
                               "train": {"lr": 0.002, "batch_size": 16, "max_steps": 2}}))
    _compare(tmp_path, capsys, "--config", str(cfg), "--batch-size", "2")
    config = json.loads((tmp_path / "out" / "results.json").read_text())["config"]
    assert config["training"]["lr"] == config["train_config"]["lr"] == 0.002  # from the file
    assert config["training"]["batch_size"] == 2  # the flag wins over the file
    assert config["seeds"] == [0] and config["conditions"] == ["unfiltered"]  # flags win here too
    cfg.write_text(json.dumps({"train": {"lr": 0.002}, "training": {"lr": 0.1}}))
    capsys.readouterr()
    assert main(["compare", "--config", str(cfg), "-o", str(tmp_path / "x")]) == 2
    assert "both \"train\" and \"training\"" in capsys.readouterr().err


@pytest.mark.parametrize("content, needle", [
    ({"seeds": 1, "bogus": 2}, "unknown key 'bogus'"),
    ({"train": {"lr": 0.1, "lrr": 2}}, "unknown key 'train.lrr'"),
    ({"train": {"lr": "fast"}}, "train.lr: expected float"),
    ({"seeds": "two"}, "seeds: expected int"),
    ({"train": {"seed": 3}}, "train.seed: compare sets it at the top level"),
    ({"train": {"ties": "model"}}, "train.ties: compare sets it per condition: \"conditions\" "
                                   "from ties-drop"),
    ({"model": "bow"}, "'model' is a training option: put it under \"training\""),
    ({"conditions": {"a": 1}}, "conditions: expected a list or a comma string"),
    ({"detectors": ["reviewed:"]}, "'reviewed:' needs a detector name"),
    ({"fractions": [0.3, 0.1]}, "--fractions: 0.3,0.1 is not increasing"),
    ({"training": {"lr": "fast"}}, "training.lr: expected float"),  # as the file spells it
    ({"seeds": 1, "lr": 1e-4}, "'lr' is a training option: put it under \"training\""),
    ([1, 2], "expected a JSON object"),
])
def test_a_config_file_is_checked_before_any_work(content: Any, needle: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(content))
    db = f"sqlite:///{tmp_path}/c.db"
    capsys.readouterr()
    assert main(["compare", "--train", SYN, "--config", str(cfg), "-o", str(tmp_path / "out"),
                 "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and str(cfg) in err, err
    with Store(db) as store:
        assert store.dataset_names() == []



@pytest.mark.parametrize("name, content, flags, expected", [
    ("cfg.yaml", "train:\n  epochs: 0\n", [], "{cfg}: train.epochs must be at least 1 (got 0)"),
    ("cfg.json", {"training": {"max_length": 0}}, [],
     "{cfg}: training.max_length must be at least 1 (got 0)"),
    ("cfg.json", {"seeds": 0}, [], "{cfg}: seeds must be at least 1 (got 0)"),
    ("cfg.json", {"detectors": []}, [], "{cfg}: detectors names no detector; leave it out"),
    # the command line wins over the file, so the value refused is the flag's
    ("cfg.json", {"train": {"epochs": 2}}, ["--epochs", "0"], "--epochs must be at least 1 (got 0)"),
    (None, None, ["--max-length", "0"], "--max-length must be at least 1 (got 0)"),
    (None, None, ["--detectors", " , "], "--detectors names no detector; leave it out"),
    (None, None, ["--detectors", ""], "--detectors names no detector; leave it out"),
])
def test_a_refused_value_names_the_flag_or_the_file_and_key_it_came_from(
        name: str | None, content: Any, flags: list[str], expected: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / (name or "none")
    if name is not None:
        cfg.write_text(content if isinstance(content, str) else json.dumps(content))
    db = f"sqlite:///{tmp_path}/c.db"
    capsys.readouterr()
    assert main(["compare", "--train", SYN, "-o", str(tmp_path / "out"), "--db", db, *flags,
                 *(["--config", str(cfg)] if name else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"rewardlab: error: {expected.format(cfg=cfg)}"), err
    with Store(db) as store:
        assert store.dataset_names() == []  # refused before any work


def test_a_good_flag_overrides_a_bad_value_in_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  epochs: 0\n  max_length: 0\n")
    args = build_parser().parse_args(["compare", "-o", str(tmp_path / "out"), "--config", str(cfg),
                                      "--epochs", "2", "--max-length", "64"])
    training = compare_config(args).training
    assert (training.epochs, training.max_length) == (2, 64)

def test_train_takes_a_config_file_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/t.db"
    assert main(["ingest", SYN, "--name", "syn", "--db", db, "--json"]) == 0
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"model": "bow", "lr": 0.01, "batch_size": 4, "max_steps": 2}))
    assert main(["train", "syn", "-o", str(tmp_path / "m"), "--config", str(cfg), "--batch-size",
                 "2", "--db", db, "--json"]) == 0
    info = json.loads((tmp_path / "m" / "rewardlab.json").read_text())
    assert (info["config"]["lr"], info["config"]["batch_size"]) == (0.01, 2)
    cfg.write_text(json.dumps({"model": "bow", "select": "clean"}))
    capsys.readouterr()
    assert main(["train", "syn", "-o", str(tmp_path / "m2"), "--config", str(cfg), "--db", db]) == 2
    assert "unknown key 'select'" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "expected"), [
    ((), "{cfg}: epochs must be at least 1 (got 0)"),  # the file's value: the file named
    (("--epochs", "-1"), "--epochs must be at least 1 (got -1)"),  # the flag's value: the flag
])
def test_train_names_where_a_refused_value_came_from(flags: tuple[str, ...], expected: str,
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: bow\nepochs: 0\n")
    capsys.readouterr()
    assert main(["train", "syn", "-o", str(tmp_path / "m"), "--config", str(cfg), *flags,
                 "--db", f"sqlite:///{tmp_path}/t.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rewardlab: error: {expected.format(cfg=cfg)}"
    assert not (tmp_path / "m").exists()  # refused before any work


# ---------------------------------------------------------------- YAML files, typed lists

YAML_CONFIG = """\
# compare's options at the top level, training options under train:
max_pairs: 0
seeds: 1
conditions: [unfiltered, clean]
treatments: remove, flip            # a comma string, as on the command line, works too
detectors:
  - oof_margin
  - reviewed:oof_margin             # only the flags reviewers confirmed: none yet
fractions: [0.25, 0.5]
rank_by: oof_margin
train:
  model: bow
  lr: 2e-3                          # YAML 1.1 reads this as a string: a float option takes it
  batch_size: 4
  max_steps: 2
  precision: fp32
"""


def test_a_yaml_config_sets_lists_flag_sets_and_training_options(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(YAML_CONFIG)
    capsys.readouterr()
    assert main(["compare", "--train", SYN, "--test-fraction", "0.25", "--config", str(cfg),
                 "-o", str(tmp_path / "out"), "--db", f"sqlite:///{tmp_path}/c.db", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    config = saved["config"]
    assert config["conditions"] == ["unfiltered", "clean-remove", "clean-flip"]
    assert (config["treatments"], config["fractions"]) == (["remove", "flip"], [0.25, 0.5])
    assert config["detectors"] == ["oof_margin", "reviewed:oof_margin"]
    for block in (config["training"], config["train_config"]):
        assert (block["model"], block["lr"], block["batch_size"], block["max_steps"],
                block["precision"]) == ("bow", 0.002, 4, 2, "fp32")
    assert (config["model"], config["epochs"], config["max_length"]) == ("bow", 1, 256)
    flags = saved["flags"]["detectors"]
    flagged = flags["oof_margin"]["flagged"]
    assert flags["reviewed:oof_margin"]["flagged"] == 0 < flagged
    pool = saved["data"]["train"]["pairs"]
    trained = {c: b["runs"][0]["train_pairs"] for c, b in saved["conditions"].items()}
    assert trained == {"unfiltered": pool, "clean-remove": pool - flagged, "clean-flip": pool}
    dose = saved["dose_response"][0]
    assert [p["fraction"] for p in dose["points"]] == [0.25, 0.5]
    assert [p["count"] for p in dose["points"]] == [round(0.25 * pool), round(0.5 * pool)]
    assert summary["runs_planned"] == 3 + 2 * 2  # 3 conditions, 2 fractions × 2 arms, 1 seed


@pytest.mark.parametrize("text, needle", [
    ("seeds: 1\nconditions: [unfiltered, clean\ntrain:\n  lr: 0.1\n", "invalid YAML"),
    ("seeds: 1\n  max_pairs: 0\n", ":2: invalid YAML"),
    ("!!python/object/apply:os.system ['touch {marker}']\n", "invalid YAML"),  # safe_load only
    ("- 1\n- 2\n", "expected a YAML mapping of options, got list"),
])
def test_a_bad_yaml_file_is_one_line_naming_it_and_nothing_is_written(
        text: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(text.format(marker=marker))
    capsys.readouterr()
    assert main(["compare", "--train", SYN, "--test-fraction", "0.25", "--config", str(cfg),
                 "-o", str(tmp_path / "out"), "--db", f"sqlite:///{tmp_path}/c.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and f"error: {cfg}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yml"]  # no store, no report


def test_a_python_config_with_tuples_plans_without_the_cli(tmp_path: Path) -> None:
    config = CompareConfig(train=SYN, test_fraction=0.25, seeds=2, max_pairs=0,
                           conditions=("unfiltered", "clean"), treatments=("remove", "flip"),
                           detectors=(FlagSpec("length_ratio"),),
                           training=preset_training(model="bow", epochs=2))
    plan, summary = plan_comparison(config, db=f"sqlite:///{tmp_path}/p.db", progress=False)
    assert [(r.group, r.seed) for r in plan] == [
        (g, s) for g in ("unfiltered", "clean-remove", "clean-flip") for s in (0, 1)]
    assert {(r.train_config.model, r.train_config.epochs) for r in plan} == {("bow", 2)}
    assert (summary["runs"], summary["to_train"]) == (6, 6)
    assert summary["pair_steps"] == 2 * sum(len(r.pair_ids) for r in plan)  # 2 epochs each
    # a comma string is the command line's spelling: as a tuple it would be its characters
    with pytest.raises(RewardlabError, match="conditions: expected a tuple of str"):
        CompareConfig(conditions="unfiltered,clean")  # type: ignore[arg-type]
    with pytest.raises(RewardlabError, match="detectors: expected a tuple of FlagSpec"):
        CompareConfig(detectors=("reviewed:length_ratio",))  # type: ignore[arg-type]


# ---------------------------------------------------------------- --dry-run

def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/c.db"
    argv = ["compare", "--train", SYN, "--test-fraction", "0.25", "--model", "bow",
            "--conditions", "unfiltered,clean,random", "--detectors", "oof_margin", "--seeds",
            "2", "--max-pairs", "0", "--epochs", "2", "-o", str(tmp_path / "out"), "--db", db,
            "--dry-run"]
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] is True and (plan["runs"], plan["stored"], plan["to_train"]) == (6, 0, 6)
    groups = {g["group"]: g for g in plan["groups"]}
    assert list(groups) == ["unfiltered", "clean-remove", "random"]
    n_train = groups["unfiltered"]["pairs"]
    assert groups["unfiltered"]["pair_steps"] == 2 * 2 * n_train  # 2 seeds × 2 epochs
    assert groups["clean-remove"]["pairs"] == groups["random"]["pairs"] < n_train
    assert plan["pair_steps"] == sum(g["pair_steps"] for g in groups.values())
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "plan: 6 runs (0 stored, 6 to train)" in text and "nothing trained" in text
    assert not (tmp_path / "out").exists()
    with Store(db) as store:
        name = store.dataset_names()[0]
        assert store.trained_run_keys(name) == [] and store.experiments() == []
