"""compare's tie and ranking conditions (issue 32) end to end on synthetic rated data, `bow`, fp32,
SQLite: every condition × 2 seeds on one test set (the test prompts' decided pairs), each compared
with its group's reference, the rated metrics per condition with CIs, run ids and reuse, the CLI
writing report.html, and one-line refusals before any training."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rewardlab._version import __version__
from rewardlab.cli.main import main
from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import RewardlabError
from rewardlab.experiment.compare import CompareConfig, plan_comparison, run_comparison
from rewardlab.experiment.compare_config import RATED_CONDITIONS, Condition, preset_training
from rewardlab.experiment.plan import ExperimentData, plan_experiment
from rewardlab.experiment.run_job import train_and_evaluate
from rewardlab.experiment.runs import RunTask, train_run
from rewardlab.store.store import Store
from rewardlab.training.train_config import TrainConfig

SPEC = "synthetic:n=24,k=4,ties=0.2,test_n=12"
CONDITIONS = ("ties-drop", "ties-soft", "ties-model", "best-worst", "all-pairs", "listwise")
CONFIG = CompareConfig(train=SPEC, seeds=2, conditions=CONDITIONS, max_pairs=0, name="rated",
                       training=preset_training(model="bow", precision="fp32"))
REFERENCE = {"ties-soft": "ties-drop", "ties-model": "ties-drop", "all-pairs": "best-worst",
             "listwise": "best-worst"}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('rated')}/compare.db"


@pytest.fixture(scope="module")
def first(db: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_comparison(CONFIG, tmp_path_factory.mktemp("exp") / "first", db=db,
                          progress=False)


def _tie_counts(db: str) -> tuple[int, int, int]:
    """(train prompts, decided test pairs, train prompts whose best and worst are not tied)."""
    with Store(db) as store:
        train = store.load_rated("rated", split="train")
        test_pairs = store.load_pairs("rated", split="test")
    untied = sum((min(p.ranks.index(0), p.ranks.index(3)), max(p.ranks.index(0), p.ranks.index(3)))
                 not in set(p.ties) for p in train)
    return len(train), len(test_pairs), untied


def test_every_condition_runs_each_seed_on_one_test_set(first: dict[str, Any], db: str) -> None:
    prompts, n_test, untied = _tie_counts(db)
    assert list(first["conditions"]) == list(CONDITIONS) == first["config"]["conditions"]
    assert first["data"]["test"]["pairs"] == n_test and prompts == 24
    for name, block in first["conditions"].items():
        assert [r["seed"] for r in block["runs"]] == [0, 1]
        for run in block["runs"]:
            assert len(run["test_chosen_rewards"]) == run["test"]["n"] == n_test
            rated = run["rated"]
            assert rated["train_prompts"] == (untied if name == "best-worst" else prompts)
            assert len(rated["per_prompt"]["best_of_k_accuracy"]) == 12  # every test prompt
    # best-worst keeps one pair per prompt; the others every decided pair of the pool
    assert first["conditions"]["best-worst"]["runs"][0]["train_pairs"] == untied
    assert first["conditions"]["all-pairs"]["runs"][0]["train_pairs"] == first["data"]["train"]["pairs"]
    assert first["flags"] == {"detectors": {}, "union": {"flagged": 0, "rate": 0.0}}


def test_each_condition_is_compared_with_its_reference(first: dict[str, Any]) -> None:
    pairs = {(c["treated"], c["baseline"]) for c in first["comparisons"]}
    assert pairs == set(REFERENCE.items())
    assert first["multiplicity"]["tests"] == 4
    for comp in first["comparisons"]:
        assert comp["test"]["pairs"] == first["data"]["test"]["pairs"] and "p_holm" in comp
    assert [g["reference"] for g in first["rated"]["groups"]] == ["ties-drop", "best-worst"]
    assert first["verdict"].startswith("Tie handling: ") and " Ranking use: " in first["verdict"]
    # the secondary family: tau and best-of-K of each non-reference condition, Holm over them
    diffs = first["rated"]["differences"]
    assert {(d["treated"], d["metric"]) for d in diffs} == {
        (t, m) for t in REFERENCE for m in ("kendall_tau", "best_of_k_accuracy")}
    assert all(d["p_holm"] >= d["test"]["p"] and d["verdict"] for d in diffs)


def test_rated_metrics_per_condition_agree_with_each_run(first: dict[str, Any]) -> None:
    rated = first["rated"]
    for name, block in rated["conditions"].items():
        runs = first["conditions"][name]["runs"]
        tau = block["metrics"]["kendall_tau"]
        per_run = [r["rated"]["test"]["kendall_tau"]["value"] for r in runs]
        # the per-prompt values average to evaluate_rated's value in every run
        for run, value in zip(runs, per_run):
            taus = [v for v in run["rated"]["per_prompt"]["kendall_tau"] if v is not None]
            assert np.mean(taus) == pytest.approx(value)
        assert tau["mean"] == pytest.approx(np.mean(per_run)) and tau["seeds"] == 2
        assert -1.0 <= tau["ci"][0] <= tau["mean"] <= tau["ci"][1] <= 1.0
        best = block["metrics"]["best_of_k_accuracy"]
        assert 0.0 <= best["ci"][0] <= best["mean"] <= best["ci"][1] <= 1.0
        modelled = name == "ties-model"
        assert (block["metrics"]["tie_nll"] is not None) == modelled
        assert (block["tie_share"] is not None) == modelled
    tie = rated["conditions"]["ties-model"]
    assert all(p is not None and p > 0 for p in tie["tie_parameter"])
    assert 0.0 < tie["tie_share"]["predicted"] < 1.0
    assert tie["tie_share"]["observed"] == pytest.approx(
        rated["test_ties"] / (rated["test_prompts"] * 6))


def test_cli_compare_reuses_every_run_and_writes_the_report(
        first: dict[str, Any], db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(db) as store:
        keys = store.trained_run_keys("rated")
    assert len(set(keys)) == len(CONDITIONS) * 2  # all-pairs trains as ties-drop, under its own id
    config = tmp_path / "cfg.yaml"  # a --config file names the conditions
    config.write_text(f"train: '{SPEC}'\nname: rated\nseeds: 2\nmax_pairs: 0\n"
                      f"conditions: [{', '.join(CONDITIONS)}]\n"
                      "training: {model: bow, precision: fp32}\n")
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "-o", str(out), "--db", db,
                 "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in plan["groups"]] == list(CONDITIONS)
    assert plan["stored"] == plan["runs"] == 12
    assert main(["compare", "--config", str(config), "-o", str(out), "--db", db, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs_reused"] == 12 and set(summary["rated"]["conditions"]) == set(CONDITIONS)
    again = json.loads((out / "results.json").read_text())  # the same runs, the same results
    for name in CONDITIONS:
        assert [r["test_chosen_rewards"] for r in again["conditions"][name]["runs"]] == \
            [r["test_chosen_rewards"] for r in first["conditions"][name]["runs"]]
    assert again["rated"]["conditions"] == json.loads(json.dumps(first["rated"]["conditions"]))
    assert again["verdict"] == first["verdict"]
    html = (out / "report.html").read_text()
    assert "How should ties and rankings be used" in html and "Ranking and tie metrics" in html
    assert "ties-model" in html and "Kendall" in html


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


@pytest.mark.parametrize(("extra", "needle"), [
    (["--train", "synthetic:n=40", "--conditions", "ties-drop"], "--conditions ties-drop: needs rated"),
    (["--train", SPEC, "--conditions", "ties-drop,clean"], "--conditions: ties-drop trains on rated"),
    (["--train", SPEC, "--conditions", "listwise"], "listwise is compared with best-worst"),
    (["--train", SPEC, "--conditions", "ties-drop", "--ablation"], "--ablation: the tie and ranking"),
    (["--train", SPEC, "--conditions", "ties-drop", "--detectors", "empty_response"], "--detectors"),
])
def test_refusals_are_one_line_before_any_work(extra: list[str], needle: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/r.db"
    _fails(capsys, ["compare", *extra, "--model", "bow", "-o", str(tmp_path / "o"), "--db", db],
           needle)
    with Store(db) as store:
        assert store.dataset_names() == []  # refused before the ingest
    assert not (tmp_path / "o" / "results.json").exists()


def test_a_file_of_plain_pairs_is_refused_before_training(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": f"good {i}",
                                        "rejected": f"bad {i}"}) + "\n" for i in range(20)))
    db = f"sqlite:///{tmp_path}/r.db"
    _fails(capsys, ["compare", "--train", str(path), "--test-fraction", "0.3", "--conditions",
                    "ties-drop,best-worst", "--model", "bow", "-o", str(tmp_path / "o"),
                    "--db", db], "holds plain pairs, no rated prompts")
    with Store(db) as store:
        assert store.trained_run_keys(store.dataset_names()[0]) == []


def test_rated_training_options_are_set_per_condition() -> None:
    with pytest.raises(RewardlabError, match="set per condition by compare: --conditions ties-drop"):
        preset_training(model="bow", ties="soft")
    assert {c.reference for c in RATED_CONDITIONS.values()} == {"ties-drop", "best-worst"}


def test_rated_runs_travel_to_workers_whole(first: dict[str, Any], db: str) -> None:
    """--workers and Ray pickle each RunTask: the prompts go with the run and its id holds."""
    plan, summary = plan_comparison(CONFIG, db=db, progress=False)
    assert summary["stored"] == summary["runs"] == 12
    for run in plan:
        task = RunTask(run, None, "rated", test_rated=tuple(run.prompts[:2]))
        back = pickle.loads(pickle.dumps(task))
        assert back.run.id == run.id and back.run.prompts == run.prompts
        assert back.run.prompt_ids == tuple(p.meta["rated_id"] for p in run.prompts)
        assert {len(p.responses) for p in run.prompts} == ({2} if run.group == "best-worst"
                                                           else {4})
        assert (run.train_config.ties, run.train_config.ranking) == (
            RATED_CONDITIONS[run.group].ties, RATED_CONDITIONS[run.group].ranking)


def test_a_pair_run_keeps_the_id_it_had() -> None:
    """prompt_ids is hashed only for rated runs: stored pair runs stay reusable."""
    pool = [PreferencePair(i, "train", "p", "a", "b", example_id=i) for i in range(4)]
    data = ExperimentData(pool=pool, fingerprint="f", conditions=[Condition("unfiltered", "all",
                                                                            None)], seeds=[0])
    [run] = plan_experiment(CompareConfig(training=TrainConfig(model="bow")), data)
    named = {f.name: getattr(run, f.name) for f in dataclasses.fields(run)
             if f.compare and f.name != "prompt_ids"}
    named["train_config"] = dataclasses.asdict(run.train_config)
    payload = json.dumps({**named, "rewardlab": __version__}, sort_keys=True)
    assert run.prompt_ids is None and run.id == hashlib.sha256(payload.encode()).hexdigest()


def test_a_rated_run_as_a_job_of_two_processes_gives_the_one_process_record(
        first: dict[str, Any], db: str, tmp_path: Path) -> None:
    """`--gpus-per-run 2` with a tie condition: the run's prompts and the test prompts travel in
    the job's JSON spec, the 2 CPU processes (gloo) share each step, and the record is the one
    process's, rated block included."""
    plan, _ = plan_comparison(CONFIG, db=db, progress=False)
    [run] = [r for r in plan if r.group == "ties-model" and r.seed == 0]
    run = dataclasses.replace(run, train_config=dataclasses.replace(
        run.train_config, batch_size=4, grad_accum=2, logging_steps=1))  # 3 steps an epoch
    with Store(db) as store:
        test = store.load_pairs("rated", split="test")
        test_rated = tuple(store.load_rated("rated", split="test"))
    one = train_and_evaluate(run, test, checkpoint=None, progress=False, test_rated=test_rated)
    two = train_run(RunTask(run, tmp_path / "ckpt", "rated", processes=2, test_rated=test_rated),
                    test)
    losses, one_losses = ([h["loss"] for h in r["history"]] for r in (two, one))
    assert len(losses) == len(one_losses) >= 3
    assert losses[:3] == pytest.approx(one_losses[:3], abs=1e-5)
    assert losses == pytest.approx(one_losses, abs=2e-2)
    assert two["rated"]["tie_parameter"] == pytest.approx(one["rated"]["tie_parameter"], rel=1e-3)
    assert two["rated"]["train_prompts"] == one["rated"]["train_prompts"]
    tau, one_tau = (r["rated"]["test"]["kendall_tau"]["value"] for r in (two, one))
    assert tau == pytest.approx(one_tau, abs=0.02)
    assert json.loads((tmp_path / "ckpt" / "rewardlab.json").read_text())["num_processes"] == 2
