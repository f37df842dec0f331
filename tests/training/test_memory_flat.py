"""Memory stays flat across the runs of an experiment in one process (issue 33).

A compare trains six tiny BERT runs in this process; each run's record carries its peak RSS and its
RSS after the run, and neither may grow from the first run to the last by more than a bound. The
bound is sized from the model: less than what holding on to one run's model in every run would add
(`test_a_leaking_run_exceeds_the_bound` plants that leak and checks the bound sees it), and well
above the few MB the heap moves by between runs. Measured here: without giving the heap back between
runs (malloc_trim), the RSS after a run grew by 67 MB over five runs of this model; with it, by 2-6 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from rewardlab.evaluation.evaluate import evaluate_reward_model
from rewardlab.experiment.compare import CompareConfig, run_comparison
from rewardlab.flags.selection import FlagSpec
from rewardlab.models.backbones import minilm_path
from rewardlab.training.loop import train_reward_model
from rewardlab.training.memory import measured_run, reset_peak
from rewardlab.training.train_config import TrainConfig

pytestmark = pytest.mark.skipif(not reset_peak(), reason="per-run peak RSS needs Linux /proc")

WIDTH = 128  # wide enough that one leaked model (~17 MB) stands out of the heap's noise


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A random 2-layer, 128-wide BERT with the MiniLM tokenizer, and its parameters' size in MB."""
    directory = tmp_path_factory.mktemp("bert128")
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tok.vocab_size, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=4 * WIDTH, max_position_embeddings=128, num_labels=1,
        pad_token_id=tok.pad_token_id))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory, sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def _bound(model_mb: float) -> float:
    """Growth allowed from the first run to the last, in MB: 1.5 models. A run that keeps its model
    adds one model each run (4.0 over the five runs after the first); the heap moves by a few MB."""
    return 1.5 * model_mb


def _growth(values: list[float]) -> float:
    return max(values[1:]) - values[0]


def test_compare_runs_stay_flat(backbone: tuple[Path, float], tmp_path: Path) -> None:
    directory, model_mb = backbone
    training = TrainConfig(model=str(directory), epochs=1, max_length=64, precision="fp32")
    config = CompareConfig(train="synthetic:n=120,noise=0.2,seed=0", test_fraction=0.25,
                           seeds=3, conditions=("unfiltered", "random"),
                           detectors=(FlagSpec("oof_margin"),), max_pairs=0, name="memory",
                           training=training)
    results = run_comparison(config, tmp_path / "out", db=f"sqlite:///{tmp_path}/m.db",
                             progress=False)
    runs: list[dict[str, Any]] = [r for c in ("unfiltered", "random")
                                  for r in results["conditions"][c]["runs"]]
    assert len(runs) == 6
    peaks = [float(r["peak_rss_mb"]) for r in runs]
    after = [float(r["rss_after_mb"]) for r in runs]
    assert all(a <= p + 1 for a, p in zip(after, peaks))  # after the release, not above the peak
    assert min(after) > 100  # a real RSS in MB, not bytes or GB
    assert _growth(after) < _bound(model_mb), (after, _bound(model_mb))
    assert _growth(peaks) < _bound(model_mb), (peaks, _bound(model_mb))


def test_a_leaking_run_exceeds_the_bound(backbone: tuple[Path, float]) -> None:
    """The bound catches a leak of the real kind: every run's trained model kept alive."""
    from rewardlab.data.sources import read_source

    directory, model_mb = backbone
    pairs = read_source("synthetic:n=96,noise=0.2,seed=0", test_fraction=0.25).pairs
    train = [p for p in pairs if p.split == "train"]
    test = [p for p in pairs if p.split == "test"]
    kept, after = [], []
    for seed in range(6):
        with measured_run() as usage:
            result = train_reward_model(train, config=TrainConfig(
                model=str(directory), epochs=1, max_length=64, precision="fp32", seed=seed),
                progress=False)
            evaluate_reward_model(result.model, test, progress=False)
            kept.append(result)  # the leak
            del result
        after.append(usage.after_mb)
    assert _growth(after) > _bound(model_mb), (after, _bound(model_mb))
