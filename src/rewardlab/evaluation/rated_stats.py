"""Compare's rated metrics per test prompt, and their intervals and differences across seeds.

`evaluate_rated` gives one run's Kendall's tau, best-of-K accuracy and tie metrics, each with a
CI over prompts. An experiment compares conditions over several seeds on the same test prompts,
so it needs the values per prompt (`prompt_values`, one list per run, stored in its record) to
treat them as the comparisons treat test pairs (`evaluation/crossed.py`): the prompt is the unit,
each prompt's value averaged over the seeds, the seeds' scatter added (`metric_summary`,
`metric_difference`). A prompt without a value (tau needs two different true scores) is left out
of every run alike.

>>> rewards = [np.array([0.9, 0.1, 0.5]), np.array([0.2, 0.3, 0.1])]
>>> from rewardlab.data.rated import RatedPrompt
>>> prompts = [RatedPrompt(0, "test", "p", ("a", "b", "c"), (2.0, 0.0, 1.0), (0, 2, 1)),
...            RatedPrompt(1, "test", "q", ("a", "b", "c"), (1.0, 1.0, 1.0), (0, 1, 2))]
>>> values = prompt_values(rewards, prompts)
>>> values["kendall_tau"], values["best_of_k_accuracy"]
([1.0, None], [1.0, 1.0])
>>> metric_summary([[1.0, 0.5, 0.0], [1.0, 0.5, 0.5]])["mean"]
0.5833333333333334
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
from scipy import stats

from rewardlab.data.rated import RatedPrompt, tied_pairs
from rewardlab.evaluation.crossed import (
    PairUnitTest,
    pair_unit_test,
    t_test_from_parts,
    variance_parts,
)

if TYPE_CHECKING:
    from rewardlab.training.ties import TieModel

__all__ = ["PROMPT_METRICS", "BOUNDS", "PromptValues", "MetricSummary", "prompt_values", "metric_summary",
           "metric_difference"]

# the per-prompt metrics compare keeps of every run on rated data; the tie ones need a tie model
PROMPT_METRICS = ("kendall_tau", "best_of_k_accuracy", "tie_accuracy", "tie_nll")


class PromptValues(TypedDict):
    """One run's value per test prompt (None: the prompt has none); tie ones None without a tie
    model."""

    kendall_tau: list[float | None]
    best_of_k_accuracy: list[float | None]
    tie_accuracy: list[float | None] | None
    tie_nll: list[float | None] | None


class MetricSummary(TypedDict):
    """A condition's metric over its seeds: mean and 95% CI, the prompt the unit."""

    mean: float
    ci: list[float | None]
    prompts: int  # prompts with a value in every run
    seeds: int
    per_seed: list[float]  # each seed's mean over those prompts


def _tau(reward: np.ndarray, truth: Sequence[float]) -> float | None:
    """Kendall's tau-b as `evaluation.ranking.kendall_tau` takes it per prompt."""
    if len(truth) < 2 or len(set(truth)) < 2:
        return None
    return float(np.nan_to_num(stats.kendalltau(reward, truth).statistic))


def _tie_values(reward: np.ndarray, prompt: RatedPrompt, tie: TieModel
                ) -> tuple[float | None, float | None]:
    """(3-way accuracy, NLL) over the prompt's pairs under the tie model: its means per pair."""
    import torch

    from rewardlab.training.ties import LOSS, TIE, WIN, outcome_probs

    i, j = np.triu_indices(len(prompt.responses), 1)
    if len(i) == 0:
        return None, None
    tied = tied_pairs(prompt)
    outcome = np.array([TIE if (a, b) in tied
                        else WIN if prompt.scores[a] > prompt.scores[b] else LOSS
                        for a, b in zip(i.tolist(), j.tolist())])
    with torch.no_grad():
        probs = outcome_probs(torch.as_tensor(reward[i], dtype=torch.float64),
                              torch.as_tensor(reward[j], dtype=torch.float64), tie).numpy()
    chosen = np.clip(probs[np.arange(len(outcome)), outcome], 1e-12, 1.0)
    return float((probs.argmax(axis=1) == outcome).mean()), float(-np.log(chosen).mean())


def prompt_values(rewards: Sequence[np.ndarray], prompts: Sequence[RatedPrompt],
                  tie: TieModel | None = None) -> PromptValues:
    """Each test prompt's Kendall tau, best-of-K hit and (with `tie`) tie accuracy and NLL,
    from its K rewards (`evaluation.rated.rated_rewards`) and its scores."""
    values: PromptValues = {"kendall_tau": [], "best_of_k_accuracy": [], "tie_accuracy": None,
                            "tie_nll": None}
    for reward, prompt in zip(rewards, prompts, strict=True):
        truth = np.asarray(prompt.scores, dtype=float)
        values["kendall_tau"].append(_tau(np.asarray(reward), list(prompt.scores)))
        values["best_of_k_accuracy"].append(float(truth[int(np.argmax(reward))] == truth.max()))
    if tie is not None:
        pairs = [_tie_values(np.asarray(r, dtype=float), p, tie) for r, p in zip(rewards, prompts)]
        values["tie_accuracy"] = [a for a, _ in pairs]
        values["tie_nll"] = [n for _, n in pairs]
    return values


def _table(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    """(S, P) floats, None as NaN."""
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float)


# the range each metric lives in: its interval is cut to it (a t interval knows nothing of it)
BOUNDS = {"kendall_tau": (-1.0, 1.0), "best_of_k_accuracy": (0.0, 1.0),
          "tie_accuracy": (0.0, 1.0), "tie_nll": (0.0, float("inf"))}


def metric_summary(per_seed: Sequence[Sequence[float | None] | None], *,
                   bounds: tuple[float, float] = (-float("inf"), float("inf"))
                   ) -> MetricSummary | None:
    """Mean and 95% CI (cut to `bounds`) of one condition's metric from its runs' per-prompt
    values (one list per seed; a run without the metric is skipped); None when no run has it."""
    rows = [r for r in per_seed if r is not None]
    if not rows:
        return None
    x = _table(rows)
    x = x[:, ~np.isnan(x).any(axis=0)]  # (S, P') prompts with a value in every run
    if x.shape[1] == 0:
        return None
    parts = variance_parts(x)
    _, (lo, hi), _, _ = t_test_from_parts(parts)
    ci = [None if lo is None else max(lo, bounds[0]), None if hi is None else min(hi, bounds[1])]
    return {"mean": parts.diff, "ci": ci, "prompts": int(x.shape[1]), "seeds": len(rows),
            "per_seed": [float(v) for v in x.mean(axis=1)]}


def metric_difference(treated: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]],
                      metric: str) -> PairUnitTest | None:
    """treated − baseline on one metric, the prompt the unit, paired by seed where the seeds
    match (as `evaluation.stats.compare_runs`); runs are records with `rated.per_prompt`."""
    def values(run: Mapping[str, Any]) -> Sequence[float | None] | None:
        per_prompt: Mapping[str, Any] = (run.get("rated") or {}).get("per_prompt") or {}
        return per_prompt.get(metric)

    by_seed = {r["seed"]: values(r) for r in baseline}
    matched = [(values(r), by_seed[r["seed"]]) for r in treated if r["seed"] in by_seed]
    pairs = [(a, b) for a, b in matched if a is not None and b is not None]
    if not pairs:
        return None
    a, b = _table([a for a, _ in pairs]), _table([b for _, b in pairs])
    keep = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
    return pair_unit_test(a[:, keep], b[:, keep])
