"""Cross-fitted preference strength ("Secrets of RLHF, part II"): how firmly held-out reward models
prefer the chosen reply.

M repetitions (`seeds`) of K-fold cross-fitting (`folds`): repetition m deals the pairs into K folds
with its own seed, and each fold's pairs are scored by a model trained on the other K − 1 folds.
So every pair gets M margins r(chosen) − r(rejected), each from a model that never trained on it
(a flipped label cannot be memorised away), and

    strength = mean / max(std, guard)        std over the M margins (ddof=1)

`guard` = 0.1 × the median std over pairs keeps a pair on which the M models happen to agree
exactly from an infinite strength; with M = 1 there is no spread and strength = the margin itself.
score = −strength, so the most suspect pair ranks highest (what dose-response curves cut from).

Flagged: strength < `threshold` when one is given (0 = the models prefer the rejected reply on
average); by default a data-driven cut as in `oof_margin`: the flip rate ρ̂ is estimated from the
mirror symmetry of the strengths (`estimate_flip_rate`) and the round(ρ̂·N) weakest pairs are
flagged, never one with strength ≥ 0.

Two ways to get the K × M models:
- `mode="embed"` (default, a CPU): every distinct text is embedded once by a frozen sentence
  encoder (MiniLM; cached on disk, so a re-run embeds nothing), then each model is a small
  Bradley-Terry head on the features [e(response), e(prompt) ⊙ e(response)], trained in seconds.
  The prompt enters through the product because a linear head on e(prompt) alone cancels in the
  margin (both replies share the prompt). `prompt=False` uses e(response) alone and skips
  embedding the dialogues (more than half of the encoder's tokens on HH-RLHF; on the HH sample
  it cost no held-out accuracy: 0.618 either way).
- `mode="finetune"` (GPUs): every model is a full `train_reward_model` run with the `train`
  TrainConfig, as `oof_margin` trains its folds.

Per pair the run keeps the mean and std of the margins and the number of models in
`params["per_pair"]` (lists aligned with the train pairs), plus a histogram of the mean margins and
the share of pairs with a negative mean margin (~25% is published for HH-RLHF).

Measured on `synthetic:n=4000,noise=0.2` (defaults, 1 torch thread): see docs/detectors.md.

>>> result = PreferenceStrength(folds=5, seeds=4).detect(train_pairs)    # doctest: +SKIP
>>> result.params["negative_mean_share"], result.n_flagged              # doctest: +SKIP
(0.224, 792)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError
from rewardlab.flags.detectors.base import RUNTIME, DetectorResult, ThresholdKind, reasons_where
from rewardlab.flags.detectors.embedding_cache import embed_texts
from rewardlab.flags.detectors.model_based import (
    _ModelDetector,
    estimate_flip_rate,
    flag_top,
    fold_ids,
)
from rewardlab.models.names import MINILM

if TYPE_CHECKING:
    from rewardlab.flags.detectors.heads import PairFeatures

__all__ = ["PreferenceStrength", "strength_from_margins"]

MODES = ("embed", "finetune")
HEADS = ("linear", "mlp")
_GUARD_FRACTION = 0.1  # guard = this × the median std over pairs
_HISTOGRAM_BINS = 40


def strength_from_margins(margins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, N) held-out margins → (mean, std, strength), each (N,).

    >>> strength_from_margins(np.array([[1.0, -2.0], [3.0, -2.0]]))[2].round(2).tolist()
    [1.41, -28.28]
    """
    mean = margins.mean(axis=0)  # (N,)
    if margins.shape[0] < 2:
        return mean, np.zeros_like(mean), mean.copy()
    std = margins.std(axis=0, ddof=1)  # (N,)
    guard = max(_GUARD_FRACTION * float(np.median(std)), 1e-6)
    return mean, std, mean / np.maximum(std, guard)


def _flag_weakest(strength: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """Flag the `count` lowest strengths, never one ≥ 0 → (flags, threshold on score = −strength;
    flagged ⇔ score ≥ threshold and strength < 0)."""
    return flag_top(-strength, strength < 0, count, empty_threshold=math.inf)


@dataclass
class PreferenceStrength(_ModelDetector):
    """K folds × M seeds of held-out reward models; flags the pairs they prefer the rejected reply
    of, ranked by strength = mean/std of their margins (score = −strength)."""

    name = "preference_strength"
    description = "held-out reward models prefer the rejected reply (mean/std of their margins)"
    mode: str = "embed"  # "embed": heads on frozen embeddings (CPU) | "finetune": full models
    folds: int = 5
    seeds: int = 4  # M: repetitions of the K-fold split, so M held-out margins per pair
    threshold: float | None = None  # flag strength < threshold; None: data-driven cut
    seed: int = 0
    backbone: str = MINILM  # embed mode: the frozen sentence encoder
    prompt: bool = True  # embed mode: features [e(r), e(p) ⊙ e(r)]; False: e(r) alone, half the texts
    head: str = "linear"  # embed mode: "linear" | "mlp"
    head_hidden: int = 256
    head_steps: int = 100  # L-BFGS iterations (linear) or Adam steps (mlp)
    head_batch_size: int = 2048  # mlp only: pairs per Adam step
    head_lr: float = 1e-2  # mlp only: Adam's learning rate
    head_l2: float = 3.0  # L2 penalty on the head's weights, per the summed pair loss
    batch_size: int = field(default=64, metadata=RUNTIME)  # embedding batch
    device: str = field(default="auto", metadata=RUNTIME)
    cache_dir: str = field(default="", metadata=RUNTIME)  # "": $XDG_CACHE_HOME/rewardlab/embeddings
    cache: bool = field(default=True, metadata=RUNTIME)

    def __post_init__(self) -> None:
        # checked when built, so `rewardlab flag` refuses a typo before any detector runs
        problems = [f"mode must be one of {', '.join(MODES)} (got {self.mode!r})"
                    if self.mode not in MODES else "",
                    f"head must be one of {', '.join(HEADS)} (got {self.head!r})"
                    if self.head not in HEADS else "",
                    "folds must be >= 2" if self.folds < 2 else "",
                    "seeds must be >= 1" if self.seeds < 1 else "",
                    "head_steps, head_batch_size and head_hidden must be >= 1"
                    if min(self.head_steps, self.head_batch_size, self.head_hidden) < 1 else "",
                    "threshold must be finite" if self.threshold is not None
                    and not math.isfinite(self.threshold) else ""]
        problem = next((p for p in problems if p), "")
        if problem:
            raise SelectionError(f"preference_strength: {problem}")

    @property
    def params(self) -> dict[str, Any]:
        """The detector's own settings; the `train` settings too in finetune mode only."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if not f.metadata.get("runtime") and f.name != "train"}
        if self.mode == "finetune":
            train = {k: v for k, v in super().params.items() if k not in own and k != "seed"}
            return {**own, **{f"train_{k}": v for k, v in train.items()}}
        return own

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        n = len(train)
        if n < 2 * self.folds:
            raise SelectionError(f"preference_strength needs at least 2 pairs per fold "
                                 f"(folds={self.folds}, {n} train pairs)")
        start = time.perf_counter()
        if self.mode == "embed":
            margins, extra = self._embed_margins(train)
        else:
            margins, extra = self._finetune_margins(train), {}
        extra["seconds_models"] = time.perf_counter() - start - extra.get("seconds_embedding", 0.0)
        return self._result(margins, extra)

    # ---- the K × M held-out margins -------------------------------------------------------

    def _splits(self, n: int) -> list[tuple[int, np.ndarray]]:
        """(model seed, (N,) bool held-out mask) for each of the K × M models."""
        splits = []
        for m in range(self.seeds):
            fold = fold_ids(n, self.folds, seed=self.seed + m)  # (N,)
            splits += [(self.seed + m * self.folds + k, fold == k) for k in range(self.folds)]
        return splits

    def _bar(self, total: int) -> tqdm[None]:
        return tqdm(total=total, desc="preference_strength models", unit="model",
                    disable=not self.progress)

    def _finetune_margins(self, train: Sequence[PreferencePair]) -> np.ndarray:
        margins = np.zeros((self.seeds, len(train)))  # (M, N)
        with self._bar(self.seeds * self.folds) as bar:
            for i, (seed, held) in enumerate(self._splits(len(train))):
                model = self._train([train[int(j)] for j in np.flatnonzero(~held)], seed=seed)
                margins[i // self.folds, held] = self._margins(
                    model, [train[int(j)] for j in np.flatnonzero(held)])
                bar.update()
        return margins

    def _embed_margins(self, train: Sequence[PreferencePair]) -> tuple[np.ndarray, dict[str, Any]]:
        import torch  # lazy: the registry imports this module, torch loads when a run needs it

        from rewardlab.flags.detectors.heads import fit_head, head_margins

        start = time.perf_counter()
        features, counts = self._features(train)
        extra: dict[str, Any] = {**counts, "seconds_embedding": time.perf_counter() - start}
        margins = np.zeros((self.seeds, len(train)))  # (M, N)
        with self._bar(self.seeds * self.folds) as bar:
            for i, (seed, held) in enumerate(self._splits(len(train))):
                head = fit_head(features, torch.from_numpy(np.flatnonzero(~held)), seed=seed,
                                kind=self.head, hidden=self.head_hidden, steps=self.head_steps,
                                batch_size=self.head_batch_size, lr=self.head_lr,
                                l2=self.head_l2)
                margins[i // self.folds, held] = head_margins(
                    head, features, torch.from_numpy(np.flatnonzero(held)))
                bar.update()
        return margins, extra

    def _features(self, train: Sequence[PreferencePair]) -> tuple[PairFeatures, dict[str, int]]:
        """The pairs' embedding features; each distinct response and prompt embedded once."""
        from rewardlab.flags.detectors.heads import PairFeatures  # noqa: F811 (the runtime import)

        responses = list(dict.fromkeys(t for p in train for t in (p.chosen, p.rejected)))
        prompts = list(dict.fromkeys(p.prompt_text for p in train)) if self.prompt else []
        response_vectors, new_responses = self._embed(responses, truncation="right")
        # a long dialogue keeps its last turns, the ones the replies answer
        prompt_vectors, new_prompts = self._embed(prompts, truncation="left")
        row = {t: i for i, t in enumerate(responses)}
        prompt_row = {t: i for i, t in enumerate(prompts)}
        features = PairFeatures.build(
            response_vectors, prompt_vectors if self.prompt else None,
            chosen=[row[p.chosen] for p in train], rejected=[row[p.rejected] for p in train],
            prompt=[prompt_row.get(p.prompt_text, 0) for p in train])
        texts = len(responses) + len(prompts)
        return features, {"texts": texts, "embedded": new_responses + new_prompts,
                          "from_cache": texts - new_responses - new_prompts}

    def _embed(self, texts: list[str], *, truncation: str) -> tuple[np.ndarray, int]:
        return embed_texts(texts, model=self.backbone, device=self.device,
                           batch_size=self.batch_size, progress=self.progress,
                           cache_dir=Path(self.cache_dir).expanduser() if self.cache_dir else None,
                           truncation=truncation, use_cache=self.cache)

    # ---- result ---------------------------------------------------------------------------

    def _cut(self, strength: np.ndarray) -> tuple[np.ndarray, float, ThresholdKind, dict[str, Any]]:
        """(flags, threshold on the score, its kind, what the cut recorded)."""
        if self.threshold is not None:
            flagged = strength < self.threshold
            return flagged, -self.threshold, "fixed", {"rule": "strength < threshold"}
        rate, cut, confident = estimate_flip_rate(strength)
        estimated = round(rate * len(strength))
        flagged, threshold = _flag_weakest(strength, estimated)
        return flagged, threshold, "data", {
            "rule": "mirror flip-rate estimate on the strengths, flag the weakest",
            "estimated_flip_rate": rate, "estimated_issues": estimated,
            "confidence_cut": cut, "n_confident": confident}

    def _result(self, margins: np.ndarray, extra: dict[str, Any]) -> DetectorResult:
        mean, std, strength = strength_from_margins(margins)
        flagged, threshold, kind, cut = self._cut(strength)
        n_models = margins.shape[0]

        def reason(i: int) -> str:
            spread = f" ± {std[i]:.2f}" if n_models > 1 else ""
            return (f"{n_models} held-out reward model{'s' * (n_models > 1)} prefer the rejected "
                    f"reply: margin {mean[i]:+.2f}{spread}, strength {strength[i]:+.2f}")

        result = self.result(-strength, flagged, reasons_where(flagged, reason),
                             threshold=threshold, threshold_kind=kind)
        negative = int((mean < 0).sum())
        counts, edges = np.histogram(mean, bins=_HISTOGRAM_BINS)
        result.params.update({
            **cut, "n_models": n_models, "models_trained": n_models * self.folds,
            "negative_mean_share": negative / len(mean), "negative_mean_pairs": negative,
            # each model's accuracy on its held-out pairs, mean over the K × M: bounds the share
            "held_out_accuracy": float((margins > 0).mean()),
            "mean_margin": float(mean.mean()), "mean_std": float(std.mean()), **extra,
            "mean_margin_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
            "per_pair": {"mean_margin": np.round(mean, 5).tolist(),
                         "std_margin": np.round(std, 5).tolist(),
                         "n_models": [n_models] * len(mean)},
            "notes": self._notes(negative, len(mean), cut, extra)})
        return result

    def _notes(self, negative: int, n: int, cut: dict[str, Any], extra: dict[str, Any]) -> list[str]:
        """The lines `rewardlab flag` prints under its table."""
        notes = [f"mean held-out margin < 0 for {negative:,} of {n:,} pairs ({negative / n:.1%}; "
                 "~25% is published for HH-RLHF)"]
        if "estimated_flip_rate" in cut:
            notes.append(f"estimated flip rate {cut['estimated_flip_rate']:.1%} "
                         f"({cut['estimated_issues']:,} pairs) from the strengths' mirror symmetry")
        if "texts" in extra:
            notes.append(f"embedded {extra['embedded']:,} of {extra['texts']:,} distinct texts "
                         f"({extra['from_cache']:,} from the cache)")
        return notes
