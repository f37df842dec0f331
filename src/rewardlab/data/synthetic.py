"""Synthetic preferences with a known quality function and injected label noise: ground truth.

Every response is a short bag of real English words; each word has a hidden value. A hidden quality
function scores a response (default `mean`: the average word value, as in the classic "reward
modeling from scratch" lesson). The preferred response of a pair is the higher-quality one; then
exactly `round(noise * n)` TRAIN pairs get chosen and rejected swapped. The truth travels with each
pair in `pair.meta`, so detectors can be scored against the injected flips and a trained reward
model against the true quality.

`k=K,ties=T` (issue 32) instead draws K responses per prompt, scored by their true quality, with a
tie wherever two qualities are closer than the band that makes a share T of all pairs ties; it is
read with `read_synthetic_rated` into `RatedPrompt`s (what `read_source` and ingest do with it).

>>> result = read_synthetic("synthetic:n=8,noise=0.25,seed=0")
>>> sum(p.meta["flipped"] for p in result.pairs if p.split == "train")
2
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rewardlab.data.pairs import PreferencePair, Split
from rewardlab.data.rated import RatedData, RatedPrompt, ranks_from_scores
from rewardlab.data.source_result import SourceResult
from rewardlab.errors import SourceError

__all__ = [
    "PROMPT",
    "WORD_VALUES",
    "KEYWORDS",
    "QUALITY_FNS",
    "SyntheticConfig",
    "parse_synthetic_spec",
    "quality_of",
    "generate_pairs",
    "read_synthetic",
    "tie_band",
    "generate_rated",
    "read_synthetic_rated",
]

PREFIX = "synthetic:"
# The model input is (prompt_text, response); one fixed instruction keeps the prompt out of the
# signal (it is shared within every pair, so it cancels in the Bradley-Terry margin).
PROMPT = "Write a short reply."
SUBSET = "synthetic"

# Hidden word values. Every word is a single token in the MiniLM (BERT uncased) wordpiece vocab, so
# a bag-of-embeddings model can learn one number per word. Words "sound like" their value so a reader
# of the demo can guess the quality of a response at a glance.
WORD_VALUES: dict[str, float] = {
    # helpful-sounding: high value
    "helpful": 3.0, "honest": 2.8, "accurate": 2.6, "clear": 2.4, "thoughtful": 2.2,
    "correct": 2.0, "careful": 1.9, "useful": 1.8, "precise": 1.7, "thorough": 1.6,
    "kind": 1.5, "polite": 1.4, "safe": 1.3, "friendly": 1.2, "patient": 1.1, "respectful": 1.0,
    # unhelpful-sounding: low value
    "harmful": -3.0, "insulting": -2.8, "misleading": -2.6, "hostile": -2.4, "cruel": -2.2,
    "false": -2.0, "wrong": -1.9, "unsafe": -1.8, "rude": -1.7, "useless": -1.6,
    "careless": -1.5, "sloppy": -1.4, "confusing": -1.3, "vague": -1.2, "lazy": -1.1,
    "boring": -1.0,
    # neutral filler: close to zero
    "table": 0.4, "river": -0.4, "window": 0.3, "garden": -0.3, "paper": 0.2, "music": -0.2,
    "morning": 0.1, "city": -0.1, "number": 0.05, "color": -0.05, "train": 0.0, "coffee": 0.0,
    "market": 0.15, "planet": -0.15, "letter": 0.25, "bridge": -0.25,
}
# `keyword` quality counts distinct keywords present, whatever the other words are.
KEYWORDS: frozenset[str] = frozenset({"helpful", "honest", "accurate", "clear", "safe", "polite"})

_WORDS = list(WORD_VALUES)
_VALUES = np.array([WORD_VALUES[w] for w in _WORDS])  # (V,)
_MIN_LEN, _MAX_LEN = 6, 12
# A response's "tone" tilts which words it draws, so qualities spread widely instead of all sitting
# near the vocabulary mean (i.i.d. words would make most pairs near-ties).
_TONE = 1.0
# Pairs closer than this in true quality are redrawn: a learnable task, not a coin flip on ties.
_MIN_GAP = {"mean": 0.3, "keyword": 1.0}


def _mean_quality(words: list[str]) -> float:
    return float(np.mean([WORD_VALUES[w] for w in words]))


def _keyword_quality(words: list[str]) -> float:
    return float(len(KEYWORDS.intersection(words)))


QUALITY_FNS: dict[str, Callable[[list[str]], float]] = {
    "mean": _mean_quality,
    "keyword": _keyword_quality,
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Parsed `synthetic:` spec. `test_n=None` means n // 4 (a noise-free test split).

    `k` set: n prompts of K responses each (train; test_n prompts in test), `ties` the share of
    their pairs that are ties; label noise does not apply (the scores are the true qualities).
    """

    n: int = 4000
    noise: float = 0.2
    seed: int = 0
    quality: str = "mean"
    test_n: int | None = None
    k: int | None = None
    ties: float = 0.0

    @property
    def n_test(self) -> int:
        return self.n // 4 if self.test_n is None else self.test_n

    @property
    def n_flipped(self) -> int:
        return round(self.noise * self.n)


_KEYS: dict[str, Callable[[str], Any]] = {
    "n": int, "noise": float, "seed": int, "quality": str, "test_n": int, "k": int, "ties": float,
}


def _check_value(key: str, value: Any) -> str | None:
    """Why `value` is invalid for `key`, or None."""
    if key in ("n",) and value < 1:
        return "must be >= 1"
    if key == "test_n" and value < 0:
        return "must be >= 0"
    if key == "noise" and not 0.0 <= value <= 1.0:
        return "must be in [0, 1]"
    if key == "k" and value < 2:
        return "must be >= 2 (responses per prompt)"
    if key == "ties" and not 0.0 <= value < 1.0:
        return "must be in [0, 1)"
    if key == "quality" and value not in QUALITY_FNS:
        return f"must be one of: {', '.join(QUALITY_FNS)}"
    return None


def parse_synthetic_spec(spec: str) -> SyntheticConfig:
    """`"synthetic:n=800,noise=0.1"` → SyntheticConfig; bad keys/values raise SourceError.

    >>> parse_synthetic_spec("synthetic:n=10,quality=keyword").quality
    'keyword'
    """
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, raw = (s.strip() for s in item.partition("="))
        if key not in _KEYS or not sep:
            raise SourceError(f"{spec}: unknown synthetic option {item!r}; "
                              f"accepted keys: {', '.join(_KEYS)} (as key=value)")
        try:
            value = _KEYS[key](raw)
        except ValueError:
            raise SourceError(f"{spec}: {key}={raw!r} is not a valid "
                              f"{_KEYS[key].__name__}") from None
        if (problem := _check_value(key, value)) is not None:
            raise SourceError(f"{spec}: {key}={raw} {problem}")
        values[key] = value
    _check_rated_keys(spec, values)
    return SyntheticConfig(**values)


def _check_rated_keys(spec: str, values: dict[str, Any]) -> None:
    """`ties` needs `k`; `noise` has no meaning with `k`; a tie band needs continuous qualities."""
    if "ties" in values and "k" not in values:
        raise SourceError(f"{spec}: ties= needs k= (responses per prompt)")
    if "k" in values and "noise" in values:
        raise SourceError(f"{spec}: noise= does not apply with k= (scores are the true qualities)")
    if values.get("ties", 0.0) > 0 and values.get("quality", "mean") != "mean":
        raise SourceError(f"{spec}: ties= needs quality=mean (keyword qualities are whole numbers)")


def quality_of(text: str, quality: str = "mean") -> float:
    """True hidden quality of a synthetic response (words outside the vocabulary are ignored).

    >>> quality_of("helpful rude")
    0.65
    """
    words = [w for w in text.split() if w in WORD_VALUES]
    return QUALITY_FNS[quality](words) if words else 0.0


def _sample_indices(rng: np.random.Generator) -> np.ndarray:
    """One response's word indices: a random length and a random tone that tilts word choice
    toward good or bad words.

    `rng.choice(V, size=length, p=p)` without its argument checks: the same cdf and the same
    draws from `rng` (so every seeded dataset is unchanged), at a third less time, which the
    20,000 pairs of `tie_band` add up.
    """
    tone = rng.uniform(-_TONE, _TONE)
    logits = tone * _VALUES  # (V,)
    probs = np.exp(logits - logits.max())
    length = int(rng.integers(_MIN_LEN, _MAX_LEN + 1))
    cdf = (probs / probs.sum()).cumsum()
    cdf /= cdf[-1]
    idx: np.ndarray = cdf.searchsorted(rng.random(length), side="right")
    return idx


def _sample_words(rng: np.random.Generator) -> list[str]:
    """One response: a random length and a random tone that tilts word choice toward good or bad."""
    return [_WORDS[i] for i in _sample_indices(rng)]


def _sample_pair(rng: np.random.Generator, quality: str) -> tuple[str, str, float, float]:
    """(better, worse, q_better, q_worse), redrawing the second response until the gap is clear."""
    fn = QUALITY_FNS[quality]
    a = _sample_words(rng)
    qa = fn(a)
    while True:
        b = _sample_words(rng)
        qb = fn(b)
        if abs(qa - qb) >= _MIN_GAP[quality]:
            break
    if qb > qa:
        a, b, qa, qb = b, a, qb, qa
    return " ".join(a), " ".join(b), qa, qb


def _make_split(cfg: SyntheticConfig, split: Split, count: int, *,
                flip: set[int]) -> list[PreferencePair]:
    rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1])
    pairs = []
    for i in range(count):
        better, worse, qb, qw = _sample_pair(rng, cfg.quality)
        flipped = i in flip
        chosen, rejected = (worse, better) if flipped else (better, worse)
        meta = {"quality_chosen": qw if flipped else qb, "quality_rejected": qb if flipped else qw,
                "flipped": flipped, "quality_fn": cfg.quality}
        pairs.append(PreferencePair(source_index=i, split=split, prompt=PROMPT, chosen=chosen,
                                    rejected=rejected, subset=SUBSET, meta=meta))
    return pairs


def generate_pairs(cfg: SyntheticConfig) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, test) pairs. Train has exactly `cfg.n_flipped` flipped labels; test is noise-free.

    Streams are seeded separately, so the test split depends only on (seed, quality, test_n).
    """
    flip_rng = np.random.default_rng([cfg.seed, 2])
    flip = set(flip_rng.choice(cfg.n, size=cfg.n_flipped, replace=False).tolist())
    train = _make_split(cfg, "train", cfg.n, flip=flip)
    test = _make_split(cfg, "test", cfg.n_test, flip=set())
    return train, test


def _apply_test_fraction(cfg: SyntheticConfig, test_fraction: float | None) -> SyntheticConfig:
    """`--test-fraction f` sizes the test split to f of all pairs unless the spec set test_n."""
    if test_fraction is None or cfg.test_n is not None:
        return cfg
    test_n = round(cfg.n * test_fraction / (1.0 - test_fraction))
    return dataclasses.replace(cfg, test_n=test_n)


def _check_options(split: str | None, test_fraction: float | None, limit: int | None) -> None:
    """The same keyword checks as file sources, with the same one-line messages."""
    if split is not None and split not in ("train", "test"):
        raise SourceError(f"unknown split {split!r}: expected 'train' or 'test'")
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        raise SourceError(f"test fraction {test_fraction} must be between 0 and 1 (exclusive)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SourceError(f"limit {limit!r} must be a positive integer")


def read_synthetic(spec: str, *, split: Split | None = None, test_fraction: float | None = None,
                   limit: int | None = None) -> SourceResult:
    """The `synthetic:` source: `n=4000,noise=0.2,seed=0,quality=mean|keyword,test_n=n//4`.

    `split` keeps one split; `test_fraction` sizes the test split (unless the spec sets test_n);
    `limit` keeps the first N rows of each split, like reading the first rows of a file (flips are
    drawn over all n train rows first, so a limited train split holds about `noise` flips).
    Ground truth is in each pair's `meta`.
    """

    _check_options(split, test_fraction, limit)
    cfg = _apply_test_fraction(parse_synthetic_spec(spec), test_fraction)
    if cfg.k is not None:
        raise SourceError(f"{spec}: k= gives K responses per prompt: read it with "
                          "read_synthetic_rated (read_source and ingest do)")
    train, test = generate_pairs(cfg)
    splits = {"train": train[:limit], "test": test[:limit]}
    pairs = splits[split] if split is not None else splits["train"] + splits["test"]
    return SourceResult(spec=spec, pairs=pairs, read=len(pairs), rejected=[])


# Pairs drawn to place the tie band: enough that the band's own sampling error is ~0.003 in share.
_BAND_DRAWS = 20_000


def tie_band(cfg: SyntheticConfig) -> float:
    """The quality gap below which a pair is a tie, so that a share `cfg.ties` of pairs are.

    The `ties` quantile of |q_a - q_b| over independently drawn response pairs (its own seeded
    stream); 0.0 when ties=0 (no pair is closer than 0).
    """
    return _tie_band(cfg.seed, cfg.quality, cfg.ties)


@functools.lru_cache(maxsize=16)
def _tie_band(seed: int, quality: str, ties: float) -> float:
    # cached: the band depends on these three alone, and a process reads the same spec often
    if ties == 0.0:
        return 0.0
    assert quality == "mean", quality  # the spec parser refuses ties= with other qualities
    rng = np.random.default_rng([seed, 3])

    def q() -> float:  # _mean_quality of a response, without its words (the same numbers)
        return float(_VALUES[_sample_indices(rng)].mean())

    gaps = [abs(q() - q()) for _ in range(_BAND_DRAWS)]
    return float(np.quantile(gaps, ties))


def _rated_prompt(rng: np.random.Generator, cfg: SyntheticConfig, index: int, split: Split,
                  band: float) -> RatedPrompt:
    k = cfg.k if cfg.k is not None else 2
    words = [_sample_words(rng) for _ in range(k)]
    scores = tuple(QUALITY_FNS[cfg.quality](w) for w in words)
    ties = tuple((i, j) for i in range(k) for j in range(i + 1, k) if abs(scores[i] - scores[j]) < band)
    return RatedPrompt(source_index=index, split=split, prompt=PROMPT,
                       responses=tuple(" ".join(w) for w in words), scores=scores,
                       ranks=ranks_from_scores(scores), ties=ties,
                       meta={"quality_fn": cfg.quality, "tie_band": band})


def generate_rated(cfg: SyntheticConfig) -> tuple[list[RatedPrompt], list[RatedPrompt]]:
    """(train, test) prompts of K responses; seeded apart from the pair streams (seed, 10/11)."""
    return _generate_rated(cfg, tie_band(cfg))


def _generate_rated(cfg: SyntheticConfig, band: float) -> tuple[list[RatedPrompt], list[RatedPrompt]]:
    splits: list[list[RatedPrompt]] = []
    for offset, split, count in ((10, "train", cfg.n), (11, "test", cfg.n_test)):
        rng = np.random.default_rng([cfg.seed, offset])
        splits.append([_rated_prompt(rng, cfg, i, split, band)  # type: ignore[arg-type]
                       for i in range(count)])
    return splits[0], splits[1]


def read_synthetic_rated(spec: str, *, split: Split | None = None) -> RatedData:
    """The `synthetic:…,k=K,ties=T` source as K-response prompts (issue 32; ingest stores them).

    >>> data = read_synthetic_rated("synthetic:n=3,k=4,ties=0.2,test_n=1")
    >>> len(data.prompts), data.n_responses, sorted(data.prompts[0].ranks)
    (4, 16, [0, 1, 2, 3])
    """
    _check_options(split, None, None)
    cfg = parse_synthetic_spec(spec)
    if cfg.k is None:
        raise SourceError(f"{spec}: read_synthetic_rated needs k= (responses per prompt)")
    band = tie_band(cfg)
    train, test = _generate_rated(cfg, band)
    prompts = {"train": train, "test": test}[split] if split is not None else train + test
    return RatedData(spec=spec, prompts=prompts, tie_band=band)
