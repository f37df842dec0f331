"""Training on rated prompts (issue 32): a batch is B prompts × their K responses, each forwarded once.

`train_on_rated(prompts, config=…)` is `train_reward_model` for `RatedPrompt`s: the same backbone
set-up, fast forward, optimizer, plan and loop (`training.loop`), with one different step. The
B·K responses of a batch go through the model in ONE forward (the pairwise expansion forwards
each response K-1 times), then the (B, K) rewards meet the loss the config names:

* `ranking="pairs"`: all K(K-1)/2 pairs per prompt, the higher score chosen (`all_pairs_loss`,
  `margin_from_scores` optional); a tie (equal scores, or a tie label) is dropped and counted
  (`ties="drop"`), a soft target 1/2 (`"soft"`), or an outcome of a Bradley-Terry model with ties
  whose one parameter trains with the reward model (`"model"`, `tie_nll_loss`);
* `ranking="listwise"`: the Plackett-Luce likelihood of the ranking by score, equal scores tied by
  Breslow's rule (`plackett_luce_nll`); tie labels between different scores are not used.

The tie model is saved in rewardlab.json as `ties` (`ties.tie_model_of` reads it back).
What a step reads (padded inputs, each prompt's pair labels) is laid out once a run by
`training.rated_batch`, so a step only indexes it. `save_steps`, `max_steps` and `resume` work
as on pairs; a checkpoint also keeps the tie parameter (`_RatedRun.checkpoint_extra`).

>>> from rewardlab.data.synthetic import read_synthetic_rated
>>> prompts = read_synthetic_rated("synthetic:n=32,k=4,ties=0.2", split="train").prompts
>>> config = TrainConfig(model="bow", epochs=2, precision="fp32", ties="model", seed=0)
>>> result = train_on_rated(prompts, config=config, progress=False)
>>> result.n_prompts, result.n_pairs + result.n_ties == 32 * 6, result.tie_parameter > 0
(32, True, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.rated import RatedPrompt, derived_pairs, tied_pairs
from rewardlab.errors import ModelError
from rewardlab.models.batching import Encoded, PairEncoding, encode_texts
from rewardlab.training.checkpoint import finished_run
from rewardlab.training.loop import (
    TrainResult,
    _diverged,
    _finish,
    _load_model,
    _plan,
    _prepare,
    _result_from_info,
    _Run,
    _start,
    _Step,
    _train_loop,
)
from rewardlab.training.memory import released_after
from rewardlab.training.rated_batch import FlatRows, PairLabels, batch_rows
from rewardlab.training.runtime import micro_batch, training_context
from rewardlab.training.ties import (
    TIE,
    TieKind,
    TieModel,
    labelled_pairs_loss,
    outcome_probs,
    plackett_luce_nll,
    tie_nll_loss,
)
from rewardlab.training.train_config import TrainConfig

__all__ = ["TIE_LR", "RatedEncoding", "RatedTrainResult", "encode_rated", "pairwise_expansion",
           "train_on_rated"]

# The tie model's one parameter learns at its own rate: a transformer's 2e-5 would hardly move it
# (Adam steps are ~lr), and it must follow the reward scale, which grows as the model learns. At
# its maximum-likelihood value the mean predicted P(tie) over the training pairs IS the observed
# tie share, so that share shows convergence: synthetic n=400, k=4, ties=0.2, bow, 4 epochs gave
# 0.106, 0.162, 0.185, 0.206 at 0.01, 0.05, 0.1, 0.3 (observed 0.2; linear decay to 0 as the model).
TIE_LR = 0.3


def pairwise_expansion(prompts: Sequence[RatedPrompt]) -> list[PreferencePair]:
    """Every decided pair of every prompt as a plain pair (`data.rated.derived_pairs`): what the
    pair path trains on, each response forwarded once per pair it is in.

    >>> from rewardlab.data.rated import ranks_from_scores
    >>> rated = RatedPrompt(0, "train", "Say hi.", ("a", "b", "c"), (2.0, 1.0, 1.5),
    ...                     ranks_from_scores((2.0, 1.0, 1.5)), ((1, 2),))
    >>> [(p.chosen, p.rejected) for p in pairwise_expansion([rated])]
    [('a', 'b'), ('a', 'c')]
    """
    return [pair for rated in prompts for pair in derived_pairs(rated)]


@dataclass
class RatedEncoding:
    """Every response of N prompts tokenized once, prompt by prompt, with what the losses read.

    Prompt p's responses are rows `start[p]:start[p + 1]` of `rows`; `scores`, `ranks` are
    (N, K) with K the most responses of a prompt (NaN / -1 where a prompt has fewer); `tied` is
    (N, M), M = K(K-1)/2 in `torch.triu_indices` order: a tie label or equal scores.
    """

    rows: Encoded
    start: np.ndarray  # (N + 1,)
    scores: np.ndarray  # (N, K) float
    ranks: np.ndarray  # (N, K) int, listwise ranks by score (equal scores share one)
    tied: np.ndarray  # (N, M) bool

    @property
    def lengths(self) -> np.ndarray:
        """(N,) each prompt's longest response row: what it costs in a padded batch."""
        rows = self.rows.lengths
        return np.array([rows[a:b].max() for a, b in zip(self.start[:-1], self.start[1:])])

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) decided pairs and (N,) tied pairs of each prompt."""
        i, j = np.triu_indices(self.scores.shape[1], 1)
        known = ~np.isnan(self.scores[:, i] - self.scores[:, j])
        return (known & ~self.tied).sum(axis=1), (known & self.tied).sum(axis=1)


def _score_ranks(scores: np.ndarray) -> np.ndarray:
    """(K,) place by score, 0 = best, equal scores sharing the best of their places; -1 for NaN."""
    present = ~np.isnan(scores)
    higher = (scores[None, :] > scores[:, None]) & present[None, :]  # [k, m]: m scores above k
    return np.where(present, higher.sum(axis=1), -1)


def encode_rated(tokenizer: Any, prompts: Sequence[RatedPrompt], *, max_length: int,
                 rule: Any = "text-pair") -> RatedEncoding:
    """Tokenize each response once (by the backbone's input `rule`) and lay out the labels."""
    k = max(len(p.responses) for p in prompts)
    texts = [p.prompt_text for p in prompts for _ in p.responses]
    rows = encode_texts(tokenizer, texts, [r for p in prompts for r in p.responses],
                        max_length=max_length, rule=rule)
    start = np.concatenate([[0], np.cumsum([len(p.responses) for p in prompts])])
    scores = np.full((len(prompts), k), np.nan)
    position = {(int(i), int(j)): m for m, (i, j) in enumerate(zip(*np.triu_indices(k, 1)))}
    tied = np.zeros((len(prompts), len(position)), dtype=bool)
    for n, p in enumerate(prompts):
        scores[n, :len(p.scores)] = p.scores
        for pair in tied_pairs(p):  # tie labels and equal scores: the data stage's definition
            tied[n, position[pair]] = True
    ranks = np.stack([_score_ranks(s) for s in scores])
    return RatedEncoding(rows, start, scores, ranks, tied)


@dataclass
class RatedTrainResult(TrainResult):
    """`TrainResult` of a rated run: `n_pairs` counts decided pairs, `n_ties` tied ones."""

    n_prompts: int = 0
    n_ties: int = 0
    tie_parameter: float | None = None  # nu (Davidson) or theta (Rao-Kupper) with ties="model"


@dataclass(frozen=True)
class _RatedStep(_Step):
    """A step on rated prompts: `pairs` counts the whole step's loss terms (over every process),
    `decided` its decided pairs; `batches` hold prompt indices."""

    decided: int = 0


def _rated_plan(lengths: np.ndarray, keep: np.ndarray, items: np.ndarray, decided: np.ndarray,
                config: TrainConfig, *, rank: int, world: int) -> list[_Step]:
    """The loop's plan over the kept prompts (`lengths` theirs), this process's share of each step,
    with the whole step's loss terms and decided pairs: every process builds every share (the plan
    is fixed by the seed), so the step's mean needs no exchange."""
    shares = [_plan(lengths, config, rank=r, world=world) for r in range(world)]
    plan: list[_Step] = []  # of _RatedStep
    for steps in zip(*shares):
        real = [keep[i] for s in steps for b in s.batches[:len(s.batches) - s.lockstep] for i in b]
        mine = steps[rank]
        plan.append(_RatedStep(mine.epoch, [[int(keep[i]) for i in b] for b in mine.batches],
                               int(items[real].sum()), mine.lockstep, int(decided[real].sum())))
    return plan


@dataclass
class _RatedRun(_Run):
    """A run on rated prompts: the pair run's objects plus the per-prompt labels."""

    rated: RatedEncoding | None = None
    items: np.ndarray | None = None  # (N,) loss terms of each prompt (pairs, or 1 for listwise)
    items_decided: np.ndarray | None = None  # (N,) decided pairs of each prompt
    tie_model: TieModel | None = None
    flat: FlatRows | None = None  # the responses' tokens, padded per batch by indexing
    labels: PairLabels | None = None  # each prompt's pair labels, computed once

    def checkpoint_extra(self) -> dict[str, Any] | None:
        """The tie parameter (outside the prepared model; its Adam state is in the optimizer's),
        as its raw value: a float32, which a JSON number keeps exactly."""
        if self.tie_model is None:
            return None
        return {"tie_model": self.tie_model.kind, "tie_raw": self.tie_model.raw.item()}

    def restore_extra(self, saved: Any, where: Path) -> None:
        """Put back what `checkpoint_extra` saved; a checkpoint without it is refused."""
        if self.tie_model is None:
            return
        kind = self.tie_model.kind
        raw = saved.get("tie_raw") if isinstance(saved, dict) else None
        if (not isinstance(saved, dict) or saved.get("tie_model") != kind
                or isinstance(raw, bool) or not isinstance(raw, (int, float))
                or not math.isfinite(raw)):
            raise ModelError(f"cannot resume from {where}: it holds no {kind} tie parameter "
                             "(use another --output or drop --resume)")
        with torch.no_grad():
            self.tie_model.raw.fill_(float(raw))


def _collate(run: _RatedRun, idx: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """(R, T) inputs of the R responses of prompts `idx`, and (R,) their places in a (B, K) grid
    (None when every prompt has all K: the rows ARE the grid, row-major)."""
    assert run.rated is not None and run.flat is not None
    k = run.rated.scores.shape[1]
    rows, where = batch_rows(run.rated.start, idx, k)
    tok, dev = run.tokenizer, run.accelerator.device
    inputs = run.flat.pad(rows, pad_id=tok.pad_token_id, pad_type_id=tok.pad_token_type_id,
                          padding_side=tok.padding_side, device=dev,
                          position_ids=tok.padding_side == "left" and run.rule != "text-pair")
    full = len(rows) == len(idx) * k
    return inputs, None if full else torch.from_numpy(where).to(dev)


def _loss(run: _RatedRun, rewards: torch.Tensor, labels: PairLabels) -> torch.Tensor:
    """The batch's mean loss over its terms, from (B, K) rewards and its prompts' labels."""
    config = run.config
    if config.ranking == "listwise":
        return plackett_luce_nll(rewards, labels.ranks)
    if run.tie_model is None:
        return labelled_pairs_loss(rewards, labels.scored,
                                   ties="soft" if config.ties == "soft" else "drop",
                                   margin_from_scores=config.margin_from_scores)
    known = labels.scored.known  # (B, M)
    i, j = torch.triu_indices(rewards.shape[1], rewards.shape[1], offset=1, device=rewards.device)
    return tie_nll_loss(rewards[:, i][known], rewards[:, j][known], labels.outcome[known],
                        run.tie_model)


def _correct(rewards: torch.Tensor, labels: PairLabels) -> int:
    """Decided pairs of (B, K) rewards whose higher-scored side has the higher reward."""
    i, j = torch.triu_indices(rewards.shape[1], rewards.shape[1], offset=1, device=rewards.device)
    d = rewards[:, i] - rewards[:, j]  # (B, M); the sign is 0 on pairs that are not decided
    return int((labels.correct_sign * d > 0).sum())


def _rated_step(run: _RatedRun, step: _Step) -> tuple[float, int, int]:
    """One optimizer step: each response of the step's prompts forwarded once → (this process's
    share of loss × decided pairs, correct, decided pairs), so that summed over the processes the
    history's loss is per loss term, its accuracy on decided pairs."""
    assert run.rated is not None and run.items is not None and run.items_decided is not None
    assert run.labels is not None and isinstance(step, _RatedStep)
    acc, model, config = run.accelerator, run.model, run.config
    # as the pair step: the mean over the whole step's terms, gradients averaged over processes
    scale = acc.num_processes * acc.gradient_accumulation_steps
    real = len(step.batches) - step.lockstep
    batches = [np.asarray(idx, dtype=np.int64) for idx in step.batches]
    terms = float(step.pairs)  # the whole step's loss terms, over every process
    k = run.rated.scores.shape[1]
    loss_sum, correct, decided = 0.0, 0, 0
    for b, idx in enumerate(batches):
        inputs, where = _collate(run, idx)
        labels = run.labels.take(idx)
        with micro_batch(acc, model, last=b == len(batches) - 1):
            flat = model(**inputs).logits[:, 0].float()  # (R,) every response of the batch, once
            rewards = (flat.view(len(idx), k) if where is None  # (B, K)
                       else flat.new_zeros(len(idx) * k).index_copy(0, where, flat).view(len(idx), k))
            loss = _loss(run, rewards, labels)
            n_terms = float(run.items[idx].sum())
            acc.backward(loss * (n_terms * scale if b < real else 0) / terms)
        if b < real:
            loss_sum += float(loss.detach()) * n_terms
            correct += _correct(rewards.detach(), labels)
            decided += int(run.items_decided[idx].sum())
    if run.tie_model is not None and acc.num_processes > 1:
        # the tie parameter is outside DDP: its gradient averaged here, as DDP averages the model's
        raw = run.tie_model.raw
        raw.grad = acc.reduce(raw.grad if raw.grad is not None else torch.zeros_like(raw),
                              reduction="mean")
    if config.max_grad_norm > 0:
        acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum * step.decided / max(terms, 1.0), correct, decided


def _check_rated(prompts: Sequence[RatedPrompt], config: TrainConfig) -> None:
    """Refusals that need the data or the run, before any work (the config checked itself)."""
    if not prompts:
        raise ModelError("no rated training prompts")
    kinds = sorted({getattr(p, "kind", "ratings") for p in prompts} - {"ratings"})
    if config.margin_from_scores and kinds:
        raise ModelError(f"--margin-from-scores needs ratings; this data has {kinds[0]} prompts, "
                         "whose scores are no rating (drop --margin-from-scores)")


def _items(rated: RatedEncoding, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) loss terms, (N,) decided and (N,) tied pairs per prompt."""
    decided, tied = rated.counts()
    if config.ranking == "listwise":
        return (decided > 0).astype(np.int64), decided, tied  # one ranking per prompt
    return (decided + tied if config.ties != "drop" else decided), decided, tied


def _rated_fingerprint(prompts: Sequence[RatedPrompt]) -> str:
    """sha256 over what training reads of each prompt."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(json.dumps([p.prompt, p.responses, p.scores, p.ties]).encode())
    return digest.hexdigest()


def _fingerprints(prompts: Sequence[RatedPrompt]) -> dict[str, str | None]:
    """What a resume checks is the same data (a rated run has no per-pair smoothing)."""
    return {"data_fingerprint": _rated_fingerprint(prompts), "smoothing_fingerprint": None}


def _setup_rated(prompts: list[RatedPrompt], config: TrainConfig, output_dir: Path | None,
                 *, resume: bool = False) -> _RatedRun:
    loaded = _load_model(config, resume=resume, has_output=output_dir is not None)
    acc = loaded.accelerator
    rated = encode_rated(loaded.tokenizer, prompts, max_length=config.max_length, rule=loaded.rule)
    items, decided, tied = _items(rated, config)
    keep = np.flatnonzero(items > 0)  # a prompt of ties only has nothing to teach with --ties drop
    if len(keep) == 0:
        raise ModelError(f"none of the {len(prompts)} rated prompts has a pair to train on")
    plan = _rated_plan(rated.lengths[keep], keep, items, decided, config,
                       rank=acc.process_index, world=acc.num_processes)
    kind = cast(TieKind, config.tie_model or "davidson")
    # float32 on the model's device: one dtype and one device for the fused AdamW
    tie_model = (TieModel(kind).float().to(acc.device) if config.ties == "model" else None)
    extra = ({"params": list(tie_model.parameters()), "weight_decay": 0.0, "lr": TIE_LR}
             if tie_model is not None else None)
    forward, restore, optimizer, scheduler = _prepare(loaded, config, total_steps=len(plan),
                                                      extra=extra)
    data = _expansion_encoding(prompts, rated)  # truncation counts and reward statistics
    return _RatedRun(config, loaded.accelerator, forward, loaded.tokenizer, optimizer, scheduler,
                     data, None, plan, output_dir, _fingerprints(prompts), loaded.precision, restore,
                     finish=loaded.finish, rule=loaded.rule, rated=rated, items=items,
                     items_decided=decided, tie_model=tie_model, flat=FlatRows.of(rated.rows),
                     labels=PairLabels.of(rated.scores, rated.tied, rated.ranks).to(
                         loaded.accelerator.device))


def _expansion_encoding(prompts: Sequence[RatedPrompt], rated: RatedEncoding) -> PairEncoding:
    """The decided pairs' encoding, from the rows already tokenized (each response once)."""
    chosen, rejected = [], []
    for n, prompt in enumerate(prompts):
        for pair in derived_pairs(prompt):  # meta a, b: the chosen and rejected positions
            chosen.append(int(rated.start[n]) + int(pair.meta["a"]))
            rejected.append(int(rated.start[n]) + int(pair.meta["b"]))
    return PairEncoding(rated.rows.subset(chosen), rated.rows.subset(rejected))


def _tie_info(run: _RatedRun, *, n_ties: int) -> dict[str, Any]:
    """What rewardlab.json records of a rated run: its data and, with one, the tie model."""
    assert run.items is not None
    info: dict[str, Any] = {"rated": {"prompts": int((run.items > 0).sum()), "ties": n_ties,
                                      "ties_dropped": n_ties if run.config.ties == "drop" else 0,
                                      "ranking": run.config.ranking}}
    if run.tie_model is not None:
        zero = torch.zeros(1, dtype=torch.float64)
        with torch.no_grad():
            p_tie = outcome_probs(zero, zero, run.tie_model.double())[0, TIE].item()
        info["ties"] = {"model": run.tie_model.kind, "parameter": run.tie_model.value.item(),
                        "p_tie_at_equal": p_tie}
    return info


def train_on_rated(prompts: Sequence[RatedPrompt], *, config: TrainConfig,
                   output_dir: Path | None = None, resume: bool = False,
                   progress: bool = True) -> RatedTrainResult:
    """Train a reward model on rated prompts (K responses each); save it to `output_dir` if given.

    Parameters
    ----------
    prompts : sequence of RatedPrompt
        The training prompts (their `split` is not read); at least one with a pair to train on.
    config : TrainConfig
        As for `train_reward_model`; `ties`, `tie_model`, `ranking` and `margin_from_scores` pick
        the loss, `batch_size` counts prompts (each with its K responses).
    output_dir : Path or None, default None
        Save the model here, with rewardlab.json holding `rated` (prompts, ties) and, with
        `ties="model"`, `ties` (`model`, `parameter`, `p_tie_at_equal`); and the resumable
        checkpoints of `config.save_steps` (and of a `max_steps` stop), the tie parameter in them.
    resume : bool, default False
        Continue from the last checkpoint in `output_dir` (the same config and prompts, else
        `ModelError`); a finished run there is returned as is, without training.
    progress : bool, default True
        Show a progress bar (on stderr).

    Returns
    -------
    RatedTrainResult
        As `TrainResult` (`n_pairs` = decided pairs), plus prompts, ties and the tie parameter.
    """
    start = time.perf_counter()
    prompts = list(prompts)
    _check_rated(prompts, config)
    output_dir = Path(output_dir) if output_dir is not None else None
    if resume and output_dir is not None:
        done = finished_run(output_dir, config=dataclasses.asdict(config),
                            fingerprints=_fingerprints(prompts))
        if done is not None:
            return _rated_result(_result_from_info(output_dir, done), n_prompts=len(prompts))
    with released_after():
        run = _setup_rated(prompts, config, output_dir, resume=resume)
        assert run.rated is not None
        state = _start(run, resume=resume)
        with training_context(run.accelerator.device, model=config.model):
            stopped = _train_loop(run, state, progress=progress, train_step=_rated_step)
        if run.tie_model is not None and not math.isfinite(run.tie_model.value.item()):
            raise _diverged(run, step=state.step, total=len(run.plan),
                            what="the tie parameter is not a finite number")
        base = _finish(run, state, stopped=stopped, started=start,
                       extra_info=_tie_info(run, n_ties=int(run.rated.counts()[1].sum())))
        result = _rated_result(base, n_prompts=len(prompts))
        del run, state
    return result


def _rated_result(base: TrainResult, *, n_prompts: int) -> RatedTrainResult:
    """A `TrainResult` of a rated run with its prompts, ties and tie parameter (from its info)."""
    info = base.model.info
    return RatedTrainResult(**{f.name: getattr(base, f.name)
                               for f in dataclasses.fields(TrainResult)},
                            n_prompts=n_prompts, n_ties=int(info["rated"]["ties"]),
                            tie_parameter=info.get("ties", {}).get("parameter"))
