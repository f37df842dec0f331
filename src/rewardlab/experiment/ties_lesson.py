"""The demo's answer to the teaching notebook's "how would you handle ties?" (issue 32).

Synthetic prompts with K = 4 responses each, a pair being a tie exactly when the two hidden
qualities are closer than a known band (`synthetic:n=400,k=4,ties=0.2`), train one `bow` reward
model three ways (`--ties drop|soft|model`) and measure, on held-out prompts, what each does with
the ties: plain Bradley-Terry (ties dropped) still names a winner for every tied pair, soft ½
targets pull tied rewards together, and the Davidson tie model learns a tie parameter whose band
(`implied_band`) can be set against the true one. One data seed and one training seed: a lesson,
not an estimate with its own uncertainty.

>>> round(reward_band("davidson", math.e), 6)  # a tie is most probable while |d| < 2 ln nu
2.0
>>> reward_band("davidson", 0.5)  # nu <= 1: a tie is never the most probable outcome
0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

if TYPE_CHECKING:
    from rewardlab.data.rated import RatedPrompt
    from rewardlab.models.reward_model import RewardModel
    from rewardlab.report.results import TiesHandling, TiesLesson

__all__ = ["LESSON_N", "HANDLINGS", "ImpliedBand", "reward_band", "implied_band", "run_ties_lesson"]

# 400 train prompts (2,400 pairs, a fifth of them ties) and 4 epochs: a few seconds of bow on one
# CPU core, and across data seeds 0..2 the predicted tie share lands within 0.02 of the observed.
LESSON_N = 400
LESSON_TEST_N = 200  # 1,200 test pairs: the figure's bins hold dozens of pairs each
LESSON_EPOCHS = 4
HANDLINGS = ("drop", "soft", "model")


class ImpliedBand(TypedDict):
    """The tie model's band: in reward units, and over the rewards' slope on true quality."""

    reward_band: float  # |d| below which a tie is the most probable outcome
    reward_per_quality: float  # least-squares slope of reward on true quality
    quality_band: float | None  # reward_band / slope; None when the slope is not positive
    corr_reward_quality: float


def reward_band(kind: str, value: float) -> float:
    """Half-width of the reward gaps |d| over which a tie is the most probable outcome.

    Davidson: P(tie) > P(win) while nu > e^{d/2}, so |d| < 2 ln nu. Rao-Kupper (theta): tie beats
    win while (theta² - 1) σ(-d - ln theta) > 1, so |d| < ln(theta - 2/theta). 0.0 where the tie
    never is the most probable outcome (nu <= 1, theta <= 2).
    """
    if kind == "davidson":
        return max(0.0, 2 * math.log(value))
    inner = value - 2 / value
    return max(0.0, math.log(inner)) if inner > 0 else 0.0


def implied_band(model: RewardModel, test: Sequence[RatedPrompt]) -> ImpliedBand:
    """The tie model's band in quality units, to set against the data's true band: the reward
    band (`reward_band`) over the rewards' least-squares slope on the true quality of `test`'s
    responses. `quality_band` is None when the slope is not positive (the reward ignores quality).
    """
    from rewardlab.evaluation.rated import rated_rewards

    rewards = np.concatenate(rated_rewards(model, test))
    truth = np.concatenate([np.asarray(p.scores, dtype=float) for p in test])
    return _band_in_quality(model.info["ties"], truth, rewards)


def _band_in_quality(ties: dict[str, Any], truth: np.ndarray, rewards: np.ndarray) -> ImpliedBand:
    band = reward_band(str(ties["model"]), float(ties["parameter"]))
    slope = float(np.polyfit(truth, rewards, 1)[0])
    return {"reward_band": band, "reward_per_quality": slope,
            "quality_band": band / slope if slope > 0 else None,
            "corr_reward_quality": float(np.corrcoef(truth, rewards)[0, 1])}


@dataclass(frozen=True)
class LessonPairs:
    """Every pair of the test prompts, oriented so response a is the higher-quality one.

    `gap` (Q,) the true quality gap q_a - q_b >= 0, `tied` (Q,) its tie label; `rewards[h]` is
    handling h's (Q, 2) rewards of a and b.
    """

    gap: np.ndarray
    tied: np.ndarray
    rewards: dict[str, np.ndarray]

    def p_better(self, handling: str) -> np.ndarray:
        """(Q,) Bradley-Terry P(a ≻ b) = σ(r_a - r_b) under `handling`'s model."""
        d = self.rewards[handling][:, 0] - self.rewards[handling][:, 1]
        return np.asarray(1.0 / (1.0 + np.exp(-d)))


def _orient(test: Sequence[RatedPrompt], rewards: dict[str, list[np.ndarray]]) -> LessonPairs:
    """The (better, worse) pairs of `test`, a tie as training and evaluation read it."""
    from rewardlab.data.rated import tied_pairs

    gap, tied, rows = [], [], []
    for n, p in enumerate(test):
        labels = tied_pairs(p)  # tie labels and equal scores
        for i, j in zip(*np.triu_indices(len(p.responses), 1), strict=True):
            a, b = (int(i), int(j)) if p.scores[i] >= p.scores[j] else (int(j), int(i))
            gap.append(p.scores[a] - p.scores[b])
            tied.append((int(i), int(j)) in labels)
            rows.append((n, a, b))
    pairs = {h: np.array([[r[n][a], r[n][b]] for n, a, b in rows]) for h, r in rewards.items()}
    return LessonPairs(np.array(gap), np.array(tied, dtype=bool), pairs)


def _train(train: list[RatedPrompt], handling: str, seed: int, epochs: int) -> RewardModel:
    from rewardlab.training.grouped import train_on_rated
    from rewardlab.training.train_config import TrainConfig

    config = TrainConfig(model="bow", ties=handling, precision="fp32", seed=seed, epochs=epochs,
                         max_length=64)
    return train_on_rated(train, config=config, progress=False).model


def _handling(metrics: dict[str, Any], pairs: LessonPairs, p_better: np.ndarray) -> TiesHandling:
    """Ranking metrics of one handling, and its mean P(better wins) on the tied test pairs."""
    accuracy = metrics["pair_accuracy"]
    return {"kendall_tau": float(metrics["kendall_tau"]["value"]),
            "pair_accuracy": None if accuracy is None else float(accuracy["value"]),
            "p_better_on_ties": float(p_better[pairs.tied].mean())}


def _outcome_probs(model: RewardModel, rewards: np.ndarray) -> np.ndarray:
    """(Q, 3) P(a wins), P(tie), P(b wins) under the model's tie model, from (Q, 2) rewards."""
    import torch

    from rewardlab.training.ties import outcome_probs, tie_model_of

    tie = tie_model_of(model.info)
    assert tie is not None, "trained with ties='model', so rewardlab.json records its tie model"
    with torch.no_grad():
        probs = outcome_probs(torch.as_tensor(rewards[:, 0], dtype=torch.float64),
                              torch.as_tensor(rewards[:, 1], dtype=torch.float64), tie)
    return np.asarray(probs.numpy())


def run_ties_lesson(out_dir: Path, *, seed: int = 0, n: int = LESSON_N,
                    test_n: int = LESSON_TEST_N, epochs: int = LESSON_EPOCHS) -> TiesLesson:
    """Train the three tie handlings on `synthetic:n=N,k=4,ties=0.2,seed=S` (training seed S
    too), measure them on its test prompts and draw `out_dir/teach_ties.png`: the teaching
    block's `ties` record."""
    from rewardlab.data.synthetic import read_synthetic_rated
    from rewardlab.evaluation.rated import evaluate_rated, rated_rewards
    from rewardlab.experiment.teaching import plot_ties

    spec = f"synthetic:n={n},k=4,ties=0.2,seed={seed},test_n={test_n}"
    data = read_synthetic_rated(spec)
    assert data.tie_band is not None, "synthetic data always knows its band"
    train = [p for p in data.prompts if p.split == "train"]
    test = [p for p in data.prompts if p.split == "test"]
    models = {h: _train(train, h, seed, epochs) for h in HANDLINGS}
    rewards = {h: rated_rewards(m, test) for h, m in models.items()}
    metrics = {h: evaluate_rated(m, test) for h, m in models.items()}
    pairs = _orient(test, rewards)
    ties = models["model"].info["ties"]  # {model, parameter, p_tie_at_equal}
    probs = _outcome_probs(models["model"], pairs.rewards["model"])  # (Q, 3) win, tie, loss
    truth = np.concatenate([np.asarray(p.scores, dtype=float) for p in test])
    band = _band_in_quality(ties, truth, np.concatenate(rewards["model"]))
    p_better = {"drop": pairs.p_better("drop"), "soft": pairs.p_better("soft"),
                "model": probs[:, 0]}  # the tie model's own P(a wins), a tie taking its share
    lesson: TiesLesson = {
        "spec": spec, "seed": seed, "test_pairs": int(pairs.gap.size),
        "true_band": float(data.tie_band), "implied_band": band["quality_band"],
        "tie_model": str(ties["model"]), "tie_parameter": float(ties["parameter"]),
        "p_tie_at_equal": float(ties["p_tie_at_equal"]),
        "observed_tie_share": float(pairs.tied.mean()),
        "predicted_tie_share": float(probs[:, 1].mean()),
        "p_tie_on_ties": float(probs[pairs.tied, 1].mean()),
        "p_tie_on_decided": float(probs[~pairs.tied, 1].mean()),
        "tie_accuracy": float(metrics["model"]["tie_accuracy"]["value"]),
        "handlings": {h: _handling(metrics[h], pairs, p_better[h]) for h in HANDLINGS},
        "figure": str(Path(out_dir) / "teach_ties.png")}
    plot_ties(pairs.gap, pairs.tied, p_better, probs[:, 1], lesson, lesson["figure"])
    return lesson
