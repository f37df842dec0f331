"""Issue 27 items 12, 16, 18, 19 and issue 35 item 3: every option is checked before any work, a
refused pickle says what rewardlab accepts, a diverging run stops without saving a model, `clean`
needs flags, and "clean" means one detector set for `train` and `compare`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rewardlab.cli.main import main
from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import ModelError, RewardlabError, SelectionError
from rewardlab.experiment.compare import (
    CompareConfig,
    check_fractions_fit,
    compare_detectors,
    validate_compare_config,
)
from rewardlab.flags.detectors import RULE_DETECTORS, DetectorResult
from rewardlab.flags.selection import (
    CLEAN_DETECTORS,
    FlagSpec,
    clean_definition,
    flagged_ids,
    select_training_pairs,
)
from rewardlab.models.reward_model import INFO_FILE, RewardModel
from rewardlab.store.store import Store
from rewardlab.training.loop import train_reward_model
from rewardlab.training.train_config import TrainConfig
from tests._tiny import make_tiny_backbone, planted_pairs


def fails_with(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    """Run the CLI; assert exit 2 and one `rewardlab: error:` line containing every needle."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert "Traceback" not in err, err
    assert last.startswith("rewardlab: error: "), err
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def run_ok(capsys: pytest.CaptureFixture[str], argv: list[str]) -> object:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def help_text(capsys: pytest.CaptureFixture[str], command: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.fixture
def syn_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A store holding `syn` (60 synthetic train pairs + test) on which no detector has run."""
    db = f"sqlite:///{tmp_path}/syn.db"
    run_ok(capsys, ["ingest", "synthetic:n=60,noise=0.2,seed=0", "--name", "syn", "--db", db])
    return db


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny BERT whose layers are 32 wide."""
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert")))


# ------------------------------------------------- item 12: every option checked before any work

@pytest.mark.parametrize("option, value, needle", [
    ("--seeds", "-3", "--seeds must be at least 1"),
    ("--seeds", "0", "--seeds must be at least 1"),
    ("--epochs", "0", "--epochs must be at least 1"),
    ("--max-length", "0", "--max-length must be at least 1"),
    ("--max-pairs", "-1", "--max-pairs must be at least 0"),
    ("--detectors", ",,", "names no detector"),
    ("--detectors", "", "names no detector"),
    ("--detectors", "empty_response,nope", "unknown detector 'nope'"),
    ("--test-fraction", "1.5", "--test-fraction"),
    ("--model", "bert base", "unknown backbone 'bert base'"),
])
def test_compare_refuses_a_bad_option_before_ingest(option: str, value: str, needle: str,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    db, out = f"sqlite:///{tmp_path}/c.db", tmp_path / "out"
    fails_with(capsys, ["compare", "--train", "synthetic:n=60,seed=0", "--test-fraction", "0.3",
                        "--model", "bow", "-o", str(out), "--db", db, option, value], needle)
    assert not out.exists()
    assert run_ok(capsys, ["datasets", "--db", db]) == []  # nothing ingested, nothing ran


@pytest.mark.parametrize("values", [{"seeds": 0}, {"seeds": -3}, {"max_pairs": -1},
                                    {"detectors": ()}, {"detectors": "length_ratio"},
                                    {"conditions": "unfiltered,clean"}, {"fractions": "0.1"},
                                    {"test_fraction": math.nan}])
def test_compare_config_refuses_the_same_values_from_python(values: dict[str, object]) -> None:
    with pytest.raises(RewardlabError):
        CompareConfig(**values)  # type: ignore[arg-type]


def test_compare_config_keeps_its_meaningful_values() -> None:
    config = CompareConfig(seeds=1, max_pairs=0, test_fraction=0.5,
                           training=TrainConfig(epochs=1, max_length=1))
    assert (config.seeds, config.max_pairs) == (1, 0)  # max_pairs 0 = all pairs
    with pytest.raises(SelectionError, match="unknown detector 'nope'"):
        validate_compare_config(CompareConfig(detectors=(FlagSpec("length_ratio"), FlagSpec("nope"))))
    reviewed = (FlagSpec("length_ratio", reviewed_only=True),)
    assert validate_compare_config(CompareConfig(detectors=reviewed)) == []


def test_a_fraction_that_treats_no_pair_is_refused_before_any_detector_or_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    db, out = f"sqlite:///{tmp_path}/c.db", tmp_path / "out"
    capsys.readouterr()
    assert main(["compare", "--train", "synthetic:n=60,seed=0", "--test-fraction", "0.3",
                 "--model", "bow", "-o", str(out), "--db", db, "--fractions", "0.0001,0.2",
                 "--rank-by", "length_ratio"]) == 2
    err = capsys.readouterr().err
    assert "--fractions: 0.0001 of " in err and "rounded to 0" in err
    # compare says what "clean" means, as train does (issue 35 item 3)
    assert clean_definition(CLEAN_DETECTORS) in caplog.text
    [name] = Store(db).dataset_names()
    assert Store(db).latest_runs(name) == {}  # refused before any detector ran or model trained
    assert not (out / "results.json").exists()


def test_fractions_must_each_treat_a_distinct_number_of_pairs() -> None:
    check_fractions_fit([0.05, 0.1], 200)  # 10 and 20 pairs
    with pytest.raises(SelectionError, match="0.0001 of 200 .* rounded to 0"):
        check_fractions_fit([0.0001], 200)
    with pytest.raises(SelectionError, match="0.01 and 0.012 both treat 1 of 100"):
        check_fractions_fit([0.01, 0.012], 100)
    with pytest.raises(SelectionError, match="rounded to 200"):
        check_fractions_fit([0.999], 200)  # would leave nothing to train on


@pytest.mark.parametrize("option, value, needle", [
    ("--seed", "-1", "seed must be in 0..4294967295"),
    ("--seed", str(2**32), "seed must be in 0..4294967295"),
    ("--max-steps", "-1", "--max-steps must be at least 0"),
    ("--save-steps", "-1", "--save-steps must be at least 0"),
    ("--weight-decay", "-0.1", "--weight-decay must be at least 0"),
    ("--max-grad-norm", "-1", "--max-grad-norm must be at least 0"),
    ("--model", "bert base", "unknown backbone 'bert base'"),
])
def test_train_refuses_a_bad_option_before_any_work(option: str, value: str, needle: str,
                                                    syn_db: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    fails_with(capsys, ["train", "syn", "-o", str(out), "--model", "bow", "--db", syn_db,
                        option, value], needle)
    assert not out.exists()


def test_train_config_seed_range_is_numpys() -> None:
    for bad in (-1, 2**32):
        with pytest.raises(ModelError, match="seed"):
            TrainConfig(seed=bad)
    assert TrainConfig(seed=0).seed == 0 and TrainConfig(seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ModelError, match="max_steps"):
        TrainConfig(max_steps=-1)


def test_lora_rank_above_the_layer_width_is_refused_before_training(
        backbone: str, tmp_path: Path) -> None:
    pairs = planted_pairs(8, seed=0)
    out = tmp_path / "rm"
    config = TrainConfig(model=backbone, lora_r=33, batch_size=4, max_length=32)
    with pytest.raises(ModelError, match=r"--lora-r 33 is larger .* at most 32"):
        train_reward_model(pairs, config=config, output_dir=out, progress=False)
    assert not out.exists()
    ok = train_reward_model(pairs, config=TrainConfig(model=backbone, lora_r=32, batch_size=4,
                                                      max_length=32, max_steps=1),
                            progress=False)
    assert ok.steps == 1


def test_lora_rank_above_the_layer_width_is_one_cli_line(backbone: str, syn_db: str,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    fails_with(capsys, ["train", "syn", "-o", str(out), "--model", backbone, "--lora-r", "4096",
                        "--max-length", "32", "--db", syn_db, "--json"], "--lora-r 4096", "32")
    assert not out.exists()


@pytest.mark.parametrize("option, value, needle", [
    ("--n", "0", "--n must be at least 1"),
    ("--n", "10", "needs at least 15"),  # 5% of 10 pairs rounds to none
    ("--noise", "nan", "--noise must be in [0, 1]"),
    ("--noise", "1.5", "--noise must be in [0, 1]"),
])
def test_demo_refuses_a_bad_option_before_any_work(option: str, value: str, needle: str,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    fails_with(capsys, ["demo", "-o", str(out), option, value], needle)
    assert not out.exists()


@pytest.mark.parametrize("argv", [["flag", "syn", "--detectors", ",,"],
                                  ["flags", "export", "syn", "-o", "x.json", "--detectors", ""]])
def test_an_empty_detector_list_is_refused_everywhere(argv: list[str], syn_db: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(capsys, [*argv, "--db", syn_db], "--detectors", "names nothing")
    assert Store(syn_db).latest_runs("syn") == {}


def test_help_states_what_zero_and_the_defaults_mean(capsys: pytest.CaptureFixture[str]) -> None:
    train = help_text(capsys, "train")
    assert "(default, or 0: all train pairs)" in train  # --max-pairs
    assert ", ".join(CLEAN_DETECTORS) in train and "an empty list is refused" in train
    compare = help_text(capsys, "compare")
    assert ", ".join(CLEAN_DETECTORS) in compare and "an empty list is refused" in compare
    assert "0 = all" in compare


# ------------------------------------------------- item 16: a refused pickle, in rewardlab's words

class _WritesMarker:
    """Unpickling this calls open(marker, "w"): the file appears iff the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_refused_pickle_says_what_rewardlab_accepts(tmp_path: Path) -> None:
    ckpt = make_tiny_backbone(tmp_path / "ckpt")
    (ckpt / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save(_WritesMarker(marker), ckpt / "pytorch_model.bin")
    with pytest.raises(ModelError) as err:
        RewardModel.load(ckpt)
    message = str(err.value)
    assert "safetensors" in message and "refused" in message
    assert "weights_only" not in message and "trust" not in message  # not torch's unsafe advice
    assert "\n" not in message and not marker.exists()


# ------------------------------------------------- item 18: a diverging run stops, saves nothing

def _model_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*")) if out.exists() else []


def test_a_non_finite_loss_stops_training_at_that_step(tmp_path: Path) -> None:
    out = tmp_path / "rm"
    config = TrainConfig(model="bow", lr=1e30, batch_size=4, max_length=32, epochs=2)
    with pytest.raises(ModelError, match=r"training diverged at step 2 of 8: the loss is nan"):
        train_reward_model(planted_pairs(16, seed=0), config=config, output_dir=out,
                           progress=False)
    assert not {"config.json", "model.safetensors", INFO_FILE} & set(_model_files(out))


def test_non_finite_weights_after_the_last_step_are_not_saved(tmp_path: Path) -> None:
    # one step: its loss is finite (the initial weights), the weights it leaves are not
    out = tmp_path / "rm"
    config = TrainConfig(model="bow", lr=1e30, batch_size=4, max_length=32)
    with pytest.raises(ModelError, match=r"diverged at step 1 of 1: .*rewards are not finite"):
        train_reward_model(planted_pairs(4, seed=0), config=config, output_dir=out,
                           progress=False)
    assert not {"config.json", "model.safetensors", INFO_FILE} & set(_model_files(out))


def test_train_with_a_huge_lr_exits_2_naming_the_step(syn_db: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    fails_with(capsys, ["train", "syn", "-o", str(out), "--model", "bow", "--lr", "1e30",
                        "--db", syn_db, "--json"], "training diverged at step", "--lr")
    assert not (out / "model.safetensors").exists()


def test_a_sane_run_still_trains_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "rm"
    result = train_reward_model(planted_pairs(16, seed=0), output_dir=out, progress=False,
                                config=TrainConfig(model="bow", batch_size=4, max_length=32))
    assert result.complete and math.isfinite(result.train_loss)
    assert (out / "model.safetensors").is_file()


# ------------------------------------------------- item 19: clean/random/flip need flags

@pytest.mark.parametrize("extra, needle", [
    (["--select", "clean"], "ran: none"),
    (["--select", "random"], "ran: none"),
    (["--select", "clean", "--treatment", "flip"], "ran: none"),
    (["--treatment", "flip"], "--treatment flip acts on flagged pairs: add --select clean"),
    (["--detectors", "empty_response"], "--select all trains on every pair"),
])
def test_clean_selection_without_any_detector_run_is_refused(
        extra: list[str], needle: str, syn_db: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    fails_with(capsys, ["train", "syn", "-o", str(out), "--model", "bow", "--db", syn_db, *extra],
               needle)
    assert not out.exists()


def test_the_library_refuses_the_same(syn_db: str) -> None:
    with pytest.raises(SelectionError, match=r"no detector has run on 'syn' \(ran: none\)"):
        flagged_ids(Store(syn_db), "syn")
    pairs = [PreferencePair(i, "train", "p", "a", "b", example_id=i) for i in range(4)]
    with pytest.raises(SelectionError, match="needs the clean selection"):
        select_training_pairs(pairs, {0}, mode="all", treatment="flip")


# ------------------------------------------------- issue 35 item 3: one meaning of "clean"

def _save_run(store: Store, name: str, detector: str, flagged_positions: set[int]) -> None:
    train = store.load_pairs(name, split="train")
    flagged = np.array([i in flagged_positions for i in range(len(train))])
    store.save_detector_run(name, DetectorResult(
        detector=detector, scores=flagged.astype(np.float64), flagged=flagged,
        reasons=["planted" if f else "" for f in flagged.tolist()], threshold=None,
        threshold_kind="data", params={}), [int(p.example_id or 0) for p in train])


def test_train_clean_and_compare_share_one_default_detector_set(
        syn_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    store = Store(syn_db)
    for detector in RULE_DETECTORS:  # what `rewardlab flag syn` runs
        _save_run(store, "syn", detector, set())
    _save_run(store, "syn", "empty_response", {0, 1})  # a label/content flag: clean drops it
    _save_run(store, "syn", "unsafe_prompt", set(range(2, 12)))  # descriptive: clean keeps it
    train = store.load_pairs("syn", split="train")
    assert flagged_ids(store, "syn") == {train[0].example_id, train[1].example_id}
    assert [str(s) for s in compare_detectors(CompareConfig())] == list(CLEAN_DETECTORS)
    assert set(CLEAN_DETECTORS) < set(RULE_DETECTORS) and "unsafe_prompt" not in CLEAN_DETECTORS

    capsys.readouterr()
    assert main(["train", "syn", "-o", str(tmp_path / "m"), "--model", "bow", "--select", "clean",
                 "--max-steps", "1", "--db", syn_db, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["selection"] == "2 flagged pairs removed"
    assert summary["train_pairs"] == len(train) - 2
    assert summary["detectors"] == list(CLEAN_DETECTORS)
    assert clean_definition(CLEAN_DETECTORS) in caplog.text  # printed as compare prints it


def test_the_default_set_must_have_run_in_full(syn_db: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _save_run(Store(syn_db), "syn", "empty_response", {0})
    err = fails_with(capsys, ["train", "syn", "-o", str(tmp_path / "m"), "--model", "bow",
                              "--select", "clean", "--db", syn_db], "of the default clean set",
                     "ran: empty_response", "rewardlab flag syn")
    assert "identical_responses" in err
    # a set named explicitly needs only its own detectors
    assert main(["train", "syn", "-o", str(tmp_path / "m"), "--model", "bow", "--select", "clean",
                 "--detectors", "empty_response", "--max-steps", "1", "--db", syn_db,
                 "--json"]) == 0
