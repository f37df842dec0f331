"""The model side of the server: the batch score function, its precision and the /info facts
(with the tie model, for a model trained with `--ties model`).

The score function is what `RewardModel.score` does (encode by the model's input rule, length-sorted
batches, `inference_mode`), plus the truncation flags, under bf16 autocast when the precision says
so. In fp32 the rewards equal `RewardModel.score`'s (and so `rewardlab score`'s) to float rounding:
a sequence padded in another batch gives the same reward up to the last bits.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch

from rewardlab._version import __version__
from rewardlab.evaluation.outcomes import OUTCOME_FIELDS, p_tie_at_equal
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.runtime import resolve_precision
from rewardlab.training.ties import TieModel
from rewardlab.web.serve.batcher import Scored, ScoreFn
from rewardlab.web.serve.serve_config import ServeConfig

__all__ = ["serving_precision", "use_threads_per_worker", "make_score_fn", "model_facts",
           "tie_facts"]


def _backbone(rm: RewardModel) -> str:
    """The backbone name training recorded ('minilm', 'bow', a path or id), or the config's."""
    name = rm.info.get("config", {}).get("model")
    return str(name or getattr(rm.model.config, "_name_or_path", "") or "unknown")


def serving_precision(rm: RewardModel, precision: str) -> str:
    """'auto' → bf16 where it measures faster for this backbone's forward pass on this machine
    (rewardlab.training.precision, mode 'infer'), else fp32."""
    return resolve_precision(precision, model=_backbone(rm), device=rm.device, mode="infer")


def use_threads_per_worker(rm: RewardModel, workers: int) -> int:
    """Split the CPU's intra-op threads among the scoring threads (process-wide: the CLI calls it,
    for a process that only serves). Two batches on one thread each against one batch on two
    threads, 2-core CPU (benchmarks/serve_load.py): 1.45x the responses/s while other work shares
    the cores (a two-thread matmul waits at every op for its slower half), 0.83x on a quiet one."""
    if rm.device.type != "cpu" or workers <= 1:
        return torch.get_num_threads()
    threads = max(1, torch.get_num_threads() // workers)
    torch.set_num_threads(threads)
    return threads


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_score_fn(rm: RewardModel, *, precision: str, batch_size: int) -> ScoreFn:
    """(prompts, responses) → rewards + truncation flags; runs on a batcher's scoring thread.

    Autocast and inference mode are thread-local, so they are entered here, on that thread. The
    fast tokenizer sets its truncation strategy on every call (state shared by the threads), so
    encoding takes a lock; the forwards run side by side.
    """
    device = rm.device
    tokenizing = threading.Lock()

    def score(prompts: list[str], responses: list[str]) -> Scored:
        with torch.inference_mode(), _autocast(precision, device):
            with tokenizing:
                enc = rm.encode(prompts, responses)
            rewards = rm.score_encoded(enc, batch_size=batch_size)  # (N,) length-sorted batches
        return Scored([float(r) for r in rewards], [bool(t) for t in enc.truncated])

    return score


def tie_facts(tie: TieModel) -> dict[str, Any]:
    """`/info`'s `model.ties`: the tie model behind `/compare`'s p_win, p_tie and p_loss.

    >>> facts = tie_facts(TieModel("davidson", init=0.5))
    >>> facts["model"], round(facts["parameter"], 4), round(facts["p_tie_at_equal"], 4)
    ('davidson', 0.5, 0.2)
    """
    return {"model": tie.kind, "parameter": float(tie.value.item()),
            "p_tie_at_equal": p_tie_at_equal(tie), "compare_fields": list(OUTCOME_FIELDS)}


def model_facts(rm: RewardModel, *, model_dir: str, config: ServeConfig, precision: str,
                tie: TieModel | None = None) -> dict[str, Any]:
    """What `/info` says: the model card's facts (`model.ties` only for a model with a tie
    model), how it is served and the limits."""
    info = rm.info
    mcfg = rm.model.config
    train_cfg = info.get("config", {})
    facts: dict[str, Any] = {
        "rewardlab_version": __version__,
        "model": {
            "path": model_dir,
            "base_model": _backbone(rm),
            "architecture": (mcfg.architectures or [type(rm.model).__name__])[0],
            "model_type": mcfg.model_type,
            "input_rule": rm.input_rule,
            "max_length": rm.max_length,
            "trained_with_rewardlab": info.get("rewardlab_version"),
            "data_fingerprint": info.get("data_fingerprint"),
            "train_pairs": info.get("n_pairs"),
            "metrics": {k: info[k] for k in ("train_loss", "train_accuracy", "n_truncated")
                        if k in info} | dict(info.get("metrics") or {}),
            # what OpenRLHF's --normalize_reward reads as config.mean / config.std
            "reward_mean": getattr(mcfg, "mean", None),
            "reward_std": getattr(mcfg, "std", None),
            "seed": train_cfg.get("seed"),
        },
        "serving": {
            "device": str(rm.device),
            "precision": precision,
            "scores": "sigmoid(reward), in (0, 1)",
            "max_batch": config.max_batch,
            "forward_batch": config.forward_batch,
            "max_wait_ms": config.max_wait_ms,
            "workers": config.workers,
            "threads_per_worker": torch.get_num_threads(),
        },
        "limits": {"max_body_bytes": config.max_body_bytes, "max_queries": config.max_queries,
                   "max_chars": config.max_chars},
    }
    if tie is not None:
        facts["model"]["ties"] = tie_facts(tie)
    return facts
