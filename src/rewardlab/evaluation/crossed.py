"""The test of every comparison: the test pair is the unit, and seed-to-seed variance is in it.

Every model of an experiment is scored on the same P test pairs, and each condition trains S seeds.
The S × P right/wrong cells are not S·P independent coin flips: a hard pair is hard for every seed
and condition (its difficulty is shared), a condition's training data makes it better on some pairs
and worse on others for every seed, and a seed that trained well lifts all its pairs. The accuracy
difference D = acc(A) − acc(B) (means over seeds and pairs) therefore varies with

- the test pairs drawn (a population of pairs):   σ²_pair / P
- the seeds drawn (a population of training runs): σ²_seed / S
- the seed × pair noise:                          σ²_res / (S·P)

Each source is estimated from the S × P table (a two-way crossed design, Cornfield & Tukey 1956):
the test pairs from the seed-averaged per-pair differences d_p, the seeds from the per-seed means.
The test adds the two, as Clark's (1973) min F′ does for items × subjects:

    Var(D) = Var_p(d_p) / P  +  Σ_groups Var_s(seed means) / S

The first term is the paired t-test over test pairs (it holds the seed × pair noise once); the
second the t-test over seeds (it holds that noise again, which makes the test cautious; the
quasi-F that subtracts it was too liberal with 3 seeds in tests/evaluation/test_calibration_sim.py's
simulations). Seeds that carry the same id in both conditions are paired (one group: the table of
a − b); independent seeds (the A/A control) give one group per condition. The degrees of freedom
are Satterthwaite's (1946): near P − 1 when the seeds agree, near S − 1 when their scatter
dominates (with 3 seeds a seed effect costs a t multiplier of up to 4.3, as it should). The p-value
and the 95% CI come from the same t statistic, so "CI excludes 0" and "p < 0.05" never disagree.
docs/statistics.md argues the choice; tests/evaluation/test_calibration_sim.py checks its type-I error and
power by simulation.

>>> a = np.array([[1, 1, 0, 1], [1, 0, 0, 1]], bool)
>>> pair_unit_test(a, a)["p"], pair_unit_test(a, a)["ci"]
(1.0, [0.0, 0.0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
from scipy import stats as sps

__all__ = ["PairUnitTest", "SeedGroup", "VarianceParts", "variance_parts", "pair_unit_test",
           "interval_of", "direction", "format_p", "p_value",
           "t_test_from_parts", "accuracy_interval", "METHOD"]

METHOD = ("t-test over test pairs on seed-averaged correctness plus the seeds' variance "
          "(Clark's min F' for test pairs × seeds, Satterthwaite df)")
_LEVEL = 0.95


class PairUnitTest(TypedDict):
    """`pair_unit_test`: acc(A) − acc(B) with its 95% CI and p, the test pair the unit."""

    method: str
    diff: float | None  # mean over seeds and pairs; None without test pairs
    ci: list[float | None]  # [lo, hi]; excludes 0 exactly when p < 0.05
    se: float | None
    df: float | None  # Satterthwaite; None when the variance is 0
    p: float
    pairs: int
    seeds: list[int]  # seeds per side, [S_A, S_B]
    seed_design: str  # "paired by seed" | "independent seeds" | "one seed"
    var_pairs: float | None  # Var(diff) from the test pairs: Var_p(d_p) / P
    var_seeds: float | None  # Var(diff) from the seeds: Var_s(seed means) / S, summed over groups
    seed_check_p: float | None  # F-test: do seeds scatter beyond the pair noise? None: 1 seed


@dataclass(frozen=True)
class SeedGroup:
    """One S × P table's seed mean squares: MS_seed = P·Var_s(row means), MS_res = interaction."""

    seeds: int
    ms_seed: float
    ms_res: float


@dataclass(frozen=True)
class VarianceParts:
    """What the test and the power analysis need: D, the pair term and the seed groups."""

    diff: float
    pairs: int
    pair_var: float  # Var_p(d_p), ddof 1: the per-pair spread of seed-averaged differences
    groups: tuple[SeedGroup, ...]  # groups with ≥ 2 seeds (one seed says nothing of seeds)

    @property
    def var_pairs(self) -> float:
        return self.pair_var / self.pairs

    def seed_term(self, group: SeedGroup) -> float:
        """Var_s(seed means) / S: the by-seed variance of the group's mean."""
        return group.ms_seed / (group.seeds * self.pairs)

    @property
    def var_seeds(self) -> float:
        return sum(self.seed_term(g) for g in self.groups)

    @property
    def variance(self) -> float:
        """The test's variance of D: by-pair plus by-seed (Clark's min F′; conservative)."""
        return self.var_pairs + self.var_seeds

    @property
    def expected_variance(self) -> float:
        """Var(D) itself when the mean squares are their expected values (power analysis):
        σ²_pair / P + σ²_seed / S + σ²_res / (S·P), the residual counted once."""
        return self.var_pairs + sum(max(0.0, g.ms_seed - g.ms_res) / (g.seeds * self.pairs)
                                    for g in self.groups)

    @property
    def df(self) -> float:
        """Satterthwaite (1946) degrees of freedom of `variance` (inf when it is 0): Clark's
        (1973) min F′ denominator df."""
        den = self.var_pairs**2 / (self.pairs - 1)
        den += sum(self.seed_term(g) ** 2 / (g.seeds - 1) for g in self.groups)
        return self.variance**2 / den if den > 0 else math.inf


def _seed_group(x: np.ndarray) -> SeedGroup:
    """Mean squares of one (S, P) table (S ≥ 2, P ≥ 2), two-way ANOVA without replication."""
    s, p = x.shape
    rows = x.mean(axis=1, keepdims=True)  # (S, 1) each seed's accuracy (or difference)
    cols = x.mean(axis=0, keepdims=True)  # (1, P)
    grand = float(x.mean())
    ms_seed = p * float(((rows - grand) ** 2).sum()) / (s - 1)
    ms_res = float(((x - rows - cols + grand) ** 2).sum()) / ((s - 1) * (p - 1))
    return SeedGroup(seeds=s, ms_seed=ms_seed, ms_res=ms_res)


def variance_parts(a: np.ndarray, b: np.ndarray | None = None, *,
                   paired: bool = True) -> VarianceParts:
    """The decomposition of acc(A) − acc(B) (or of acc(A) alone when `b` is None).

    `a`, `b`: (S_A, P) and (S_B, P) right/wrong; `paired`: row s of A and row s of B share a seed
    (then S_A = S_B and the groups are the one table a − b).
    """
    x = np.atleast_2d(np.asarray(a, dtype=float))  # (S_A, P)
    if b is None:
        tables, d = [x], x.mean(axis=0)
    else:
        y = np.atleast_2d(np.asarray(b, dtype=float))  # (S_B, P)
        tables = [x - y] if paired else [x, y]
        d = x.mean(axis=0) - y.mean(axis=0)  # (P,) seed-averaged per-pair difference
    n = int(d.size)
    pair_var = float(d.var(ddof=1)) if n > 1 else 0.0
    groups = tuple(_seed_group(t) for t in tables if t.shape[0] > 1 and n > 1)
    return VarianceParts(diff=float(d.mean()) if n else math.nan, pairs=n, pair_var=pair_var,
                         groups=groups)


def t_test_from_parts(parts: VarianceParts, *, level: float = _LEVEL
                      ) -> tuple[float, list[float | None], float | None, float | None]:
    """(p, [lo, hi], se, df) of the t statistic D / √Var(D) with Satterthwaite's df."""
    diff, var = parts.diff, parts.variance
    if parts.pairs < 2:
        return 1.0, [None, None], None, None
    if var <= 0:  # every pair and seed agree: the difference is what it is
        p = 1.0 if diff == 0 else 0.0
        return p, [diff, diff], 0.0, None
    se, df = math.sqrt(var), parts.df
    p = float(2 * sps.t.sf(abs(diff) / se, df))
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    return min(1.0, p), [diff - half, diff + half], se, df


def _seed_check(parts: VarianceParts) -> float | None:
    """Smallest F-test p of MS_seed / MS_res over the groups: seeds scatter beyond pair noise?"""
    ps = [float(sps.f.sf(g.ms_seed / g.ms_res, g.seeds - 1, (g.seeds - 1) * (parts.pairs - 1)))
          for g in parts.groups if g.ms_res > 0]
    return min(ps) if ps else None


def pair_unit_test(a: np.ndarray, b: np.ndarray, *, paired: bool = True) -> PairUnitTest:
    """Test acc(A) = acc(B) on (S, P) right/wrong arrays, the test pair the unit (module doc).

    >>> a = np.array([[1, 1, 1, 0, 1, 1], [1, 1, 0, 1, 1, 1]], bool)
    >>> b = np.array([[0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 1, 0]], bool)
    >>> out = pair_unit_test(a, b)
    >>> round(out["diff"], 3), round(out["p"], 3), out["seed_design"]
    (0.5, 0.041, 'paired by seed')
    """
    parts = variance_parts(a, b, paired=paired)
    p, ci, se, df = t_test_from_parts(parts)
    n_a, n_b = np.atleast_2d(a).shape[0], np.atleast_2d(b).shape[0]
    design = ("one seed" if min(n_a, n_b) < 2 else "paired by seed" if paired
              else "independent seeds")
    empty = parts.pairs == 0
    return {"method": METHOD, "diff": None if empty else parts.diff, "ci": ci, "se": se,
            "df": None if df is None or not math.isfinite(df) else df, "p": p,
            "pairs": parts.pairs,
            "seeds": [n_a, n_b],
            "seed_design": design,
            "var_pairs": None if empty else parts.var_pairs,
            "var_seeds": None if empty else parts.var_seeds,
            "seed_check_p": _seed_check(parts)}


def accuracy_interval(correct: np.ndarray, *, level: float = _LEVEL) -> tuple[float, float]:
    """95% CI of one condition's accuracy, (S, P) right/wrong, with the same two variance terms.

    >>> accuracy_interval(np.ones((2, 5)))
    (1.0, 1.0)
    """
    parts = variance_parts(correct)
    if parts.pairs == 0:
        return 0.0, 1.0
    _, (lo, hi), _, _ = t_test_from_parts(parts, level=level)
    if lo is None or hi is None:  # one test pair
        return 0.0, 1.0
    return max(0.0, lo), min(1.0, hi)


def interval_of(record: Mapping[str, Any]) -> tuple[float | None, list[float | None]]:
    """(diff, [lo, hi]) of a comparison or curve record: its `test` block (results since the
    pair-unit test), else the record itself (a curve) or its `bootstrap` block (older files)."""
    block = record.get("test") or (record if "ci" in record else record.get("bootstrap")) or {}
    ci = list(block.get("ci") or [None, None])
    return block.get("diff"), ci


def direction(record: Mapping[str, Any] | None) -> int:
    """+1 when the record's 95% CI lies above 0, −1 below, 0 when it spans 0 or is missing."""
    if record is None:
        return 0
    lo, hi = interval_of(record)[1][:2]
    if lo is None or hi is None:
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def p_value(p: float) -> str:
    """A p value as every output prints it (report, console, verdict, figures), without "p":
    '< 0.001', '0.042' or '1' (from 0.995 up); for a table column headed p.

    >>> p_value(0.0421), p_value(0.0004), p_value(0.999)
    ('0.042', '< 0.001', '1')
    """
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.995 else "1"


def format_p(p: float) -> str:
    """The one p-value format in a sentence: 'p < 0.001', 'p = 0.042' or 'p = 1' (`p_value`).

    >>> format_p(0.0421), format_p(0.0004), format_p(0.999)
    ('p = 0.042', 'p < 0.001', 'p = 1')
    """
    text = p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"
