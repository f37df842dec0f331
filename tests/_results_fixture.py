"""A results dict shaped exactly like `run_comparison`'s, from simulated models: the report,
reading and style tests build their reports from it (a fixture module, not a test file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rewardlab.evaluation.metrics import preference_metrics
from rewardlab.evaluation.stats import compare_runs, notebook_table, overall_verdict, summarize_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# (condition, shift of the reward margin, train pairs): clean-remove is genuinely a bit better.
CONDITIONS = [("unfiltered", 0.0, 1050), ("clean-remove", 0.18, 1013), ("clean-flip", 0.05, 1050),
              ("random", -0.02, 1013)]
DESCRIPTIONS = {"unfiltered": "all 1050 train pairs (37 flagged, kept as they are)",
                "clean-remove": "37 flagged pairs removed",
                "clean-flip": "37 flagged pairs flipped",
                "random": "37 pairs removed at random (as many as clean removes)"}


def _history(rng: np.random.Generator, shift: float, steps: int = 120) -> list[dict]:
    t = np.arange(1, steps + 1)
    loss = 0.693 - (0.12 + shift / 3) * (1 - np.exp(-t / 40)) + rng.normal(0, 0.05, steps)
    acc = 0.5 + (0.15 + shift / 3) * (1 - np.exp(-t / 40)) + rng.normal(0, 0.08, steps)
    return [{"step": int(s), "loss": float(lo), "accuracy": float(np.clip(a, 0, 1)), "lr": 2e-5}
            for s, lo, a in zip(t, loss, acc)]


def _run(seed: int, shift: float, train_pairs: int, base: np.ndarray, lengths: tuple,
         subsets: list[str]) -> dict:
    rng = np.random.default_rng(1000 * seed + int(1000 * shift) + train_pairs)
    gap = base + shift + rng.normal(0, 0.35, base.size)  # (P,) shared difficulty + seed noise
    common = rng.normal(0, 1, base.size)
    chosen, rejected = common + gap / 2, common - gap / 2
    test = preference_metrics(chosen, rejected, chosen_lengths=lengths[0],
                              rejected_lengths=lengths[1], subsets=subsets)
    return {"seed": seed, "train_pairs": train_pairs, "flagged_in_train": 37,
            "train_loss": 0.62 - shift / 10, "train_accuracy": 0.66 + shift / 10, "seconds": 31.5,
            "checkpoint": None, "n_truncated": 12, "history": _history(rng, shift), "test": test,
            "test_chosen_rewards": chosen.tolist(), "test_rejected_rewards": rejected.tolist()}


def build_results(*, n_test: int = 462, seeds: tuple[int, ...] = (0, 1, 2),
                  teaching_dir: Path | None = None) -> dict:
    """A results dict shaped exactly like experiment.run_comparison's, from simulated models."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.35, 1.0, n_test)
    lengths = (rng.integers(20, 900, n_test), rng.integers(20, 900, n_test))
    subsets = ["harmless-base" if i % 3 else "helpful-base" for i in range(n_test)]
    conditions = {}
    for name, shift, n_train in CONDITIONS:
        runs = [_run(s, shift, n_train, base, lengths, subsets) for s in seeds]
        conditions[name] = {"treatment": name.split("-")[1] if "-" in name else None,
                            "description": DESCRIPTIONS[name], "runs": runs,
                            "summary": summarize_runs(runs)}
    comparisons = [compare_runs(t, conditions[t]["runs"], b, conditions[b]["runs"])
                   for t in conditions if t.startswith("clean-") for b in ("unfiltered", "random")]
    results = {
        "rewardlab_version": "0.1.0", "created": "2025-01-01T12:00:00+00:00", "seconds": 412.0,
        "config": {"train": "harmless-sample.jsonl.gz", "test": None, "preset": "quick",
                   "seeds": list(seeds), "conditions": list(conditions),
                   "treatments": ["remove", "flip"], "detectors": ["empty_response", "length_ratio",
                                                                   "duplicate_pair"],
                   "train_config": {"model": "minilm", "epochs": 1, "batch_size": 8, "lr": 2e-5,
                                    "max_length": 256, "precision": "auto"}, "max_pairs": 1050},
        "data": {"train": {"dataset": "harmless-sample", "source": "harmless-sample.jsonl.gz",
                           "pairs": 1050, "fingerprint": "ab" * 32},
                 "test": {"dataset": "harmless-sample", "pairs": n_test, "fingerprint": "cd" * 32}},
        "flags": {"detectors": {
            "empty_response": {"flagged": 4, "rate": 4 / 1050, "threshold": 0.0,
                               "threshold_kind": "fixed"},
            "length_ratio": {"flagged": 25, "rate": 25 / 1050, "threshold": 8.0,
                             "threshold_kind": "fixed"},
            "duplicate_pair": {"flagged": 11, "rate": 11 / 1050, "threshold": None,
                               "threshold_kind": "data"}},
            "union": {"flagged": 37, "rate": 37 / 1050}},
        "conditions": conditions, "comparisons": comparisons,
    }
    if teaching_dir is not None:
        results["teaching"] = _teaching(teaching_dir)
    results["notebook_table"] = notebook_table(conditions)
    results["verdict"] = overall_verdict(results)
    return results


def _teaching(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.add_subplot()
    x = np.linspace(-5, 5, 50)
    ax.plot(x, 1 / (1 + np.exp(-x)))
    ax.set_title("P(chosen preferred) vs margin")
    path = out_dir / "teach_bt_curves.png"
    fig.savefig(path)
    return {"noise": 0.2, "injected_flips": 210, "oracle_accuracy": 0.91, "recovered_fraction": 0.8,
            "best_treatment": "clean-remove", "quality_reward_corr": 0.93,
            "detector_quality": {"oof_margin": {"precision": 0.81, "recall": 0.74, "f1": 0.77,
                                                "flagged": 192}},
            "figures": {"bt_curves": str(path)}}
