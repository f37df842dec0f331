"""`auto` precision on a CPU, chosen by measurement on this machine and cached.

A CPU flag says whether bf16 is native, not whether it is faster: on an Intel AMX machine an
autocast bf16 `Linear` ran 17-26 GFLOP/s where fp32 ran 34-72 on the same shapes, while on an AMD
avx512_bf16 machine bf16 MiniLM steps were 1.5-2x faster (issue 34). So where bf16 is native, the
first `auto` run times the backbone's own layers in fp32 and under bf16 autocast, interleaved, and
picks bf16 only when it is faster by more than MARGIN; where it is not native, bf16 is emulated
(always slower) and fp32 is picked without measuring.

What is timed: the real architecture (`from_config`, random weights) cut to one layer, on a dummy
batch (8 rows for training, 16 for scoring) at lengths around 100 tokens, forward + backward for
training and forward under `inference_mode` for scoring. One real layer has every op the step has in
the proportions it has them (linears, attention, layer norms, activations, the casts autocast adds),
where a synthetic matmul stack would miss the ops between the matmuls. Each repetition takes a new
length, as packed batches bring new matrix shapes every step, and fp32/bf16 run back to back on the
same shapes, so their time ratio cancels both the shape and a busy machine's drift. The decision is
the median of those ratios (3 of them, more while under ~2 s).

The decision is cached as JSON in `$XDG_CACHE_HOME/rewardlab/precision.json` (default
`~/.cache/rewardlab/`), keyed by the CPU (model name and vector ISA flags), the cores this process may
use, torch's version and install path, the backbone (name + config hash) and the mode; any change is
a new key, measured again. REWARDLAB_PRECISION_AUTO=flag brings back the flag rule (native bf16 →
bf16); an explicit --precision never reaches here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rewardlab.errors import ModelError
from rewardlab.models.names import MINILM

__all__ = ["AUTO_ENV", "MARGIN", "MODES", "Calibration", "Measure", "auto_cpu_precision",
           "cache_file", "choose", "key_parts", "measure_precision"]

log = logging.getLogger(__name__)

AUTO_ENV = "REWARDLAB_PRECISION_AUTO"  # "measure" (default) | "flag": the old CPU-flag rule
MODES = ("train", "infer")
MARGIN = 1.05  # bf16 must be >5% faster: within that, fp32's exact numbers are worth more
CALIBRATION = 1  # bump when what is measured changes: older cached decisions are measured again
# rows of the dummy batch: half a training batch (4 of its 8 pairs) and one scoring forward
# (eval_batch_size); ~700-1,800 tokens keep the matmuls as large as a real step's, at half the time
_ROWS = {"train": 8, "infer": 16}
_LENGTHS = (96, 128, 80, 112, 104, 72, 120)  # one per repetition: fresh shapes, as packed batches
_MIN_REPS, _BUDGET_S = 3, 2.0  # at least 3 paired repetitions; more while under the time budget
_CLEAR = 1.5  # past the budget, 2 repetitions that agree by this factor either way settle it
_VOCAB_CAP = 8192  # rows of the dummy embedding: a 150k-token table costs init time, not step time
_ISA = re.compile(r"^(avx|amx|fma|f16c|sve|bf16|asimd)")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """One measurement: the choice, and why (fp32 time / bf16 time, median of paired reps)."""

    precision: str  # "fp32" | "bf16"
    speedup: float  # > 1: bf16 faster
    fp32_ms: float  # median time of one timed run
    bf16_ms: float
    seconds: float  # the calibration: model build and timed runs (imports aside)
    reps: int


Measure = Callable[[str, str], Calibration]  # (backbone name, mode) → Calibration

_decided: dict[str, str] = {}  # this process's decisions by cache key: measured and said once


def choose(speedup: float) -> str:
    """bf16 only when it measured faster by more than MARGIN.

    >>> choose(1.62), choose(1.03), choose(0.6)
    ('bf16', 'fp32', 'fp32')
    """
    return "bf16" if speedup > MARGIN else "fp32"


def auto_cpu_precision(model: str, *, mode: str = "train", measure: Measure | None = None) -> str:
    """'bf16' or 'fp32' for `auto` on this CPU, for backbone `model` in `mode` ('train' | 'infer').

    Cached per machine, torch and backbone; `measure` replaces the calibration (tests).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rule = os.environ.get(AUTO_ENV, "measure").strip().lower() or "measure"
    if rule not in ("measure", "flag"):
        raise ModelError(f"{AUTO_ENV}={rule!r}: expected 'measure' (the default) or 'flag'")
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if rule == "flag" or not native:
        return "bf16" if native else "fp32"  # emulated bf16: always slower, nothing to measure
    parts = key_parts(model, mode=mode)
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    if key not in _decided:
        _decided[key] = _decide(key, parts, model=model, measure=measure or measure_precision)
    return _decided[key]


def _decide(key: str, parts: dict[str, str], *, model: str, measure: Measure) -> str:
    """The cached decision, else a new measurement (saved); said once on stderr."""
    cached = _read_cache().get(key)
    if cached is not None:
        _say(f"{cached.precision} (measured {cached.speedup:.2f}x fp32 on {parts['cpu']}, "
             f"{parts['mode']}, cached)")
        return cached.precision
    if _launch()[1] > 1:
        # each process would time a different share of busy cores and could choose differently
        _say(f"bf16 (native bf16 on {parts['cpu']}; not measured in a run of several processes: "
             "run once with one process to measure)")
        return "bf16"
    result = measure(model, parts["mode"])
    where = _write_cache(key, parts, result)
    _say(f"{result.precision} (measured {result.speedup:.2f}x fp32 on {parts['cpu']}, "
         f"{parts['mode']}, in {result.seconds:.1f} s, "
         f"{f'saved to {where}' if where else 'not saved'})")
    return result.precision


def _say(decision: str) -> None:
    """One line on stderr, from the first process of a run only."""
    if _launch()[0] == 0:
        print(f"rewardlab: precision auto -> {decision}", file=sys.stderr, flush=True)


def _launch() -> tuple[int, int]:
    """(rank, processes) of this launch, from the launcher's environment."""
    from accelerate.utils import get_cpu_distributed_information

    launch = get_cpu_distributed_information()
    return int(launch.rank), int(launch.world_size)


# ---------------------------------------------------------------- the cache key

def key_parts(model: str, *, mode: str) -> dict[str, str]:
    """What a decision depends on: any change is a new key (and a new measurement)."""
    return {"cpu": cpu_model(), "isa": _isa_flags(), "cores": str(_cores()),
            "torch": torch.__version__, "torch_path": str(Path(torch.__file__).parent),
            "backbone": _backbone_identity(model), "mode": mode, "calibration": str(CALIBRATION)}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else what `platform` says)."""
    return _cpuinfo_field(("model name", "Model", "cpu model")) or platform.processor() \
        or platform.machine() or "unknown CPU"


def _isa_flags() -> str:
    """The vector ISA flags (avx*, amx*, fma, …): VMs name different CPU kinds alike ("AMD EPYC")."""
    flags = (_cpuinfo_field(("flags", "Features")) or "").split()
    return " ".join(sorted(f for f in set(flags) if _ISA.match(f)))


def _cpuinfo_field(names: tuple[str, ...]) -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in names and value.strip():
            return value.strip()
    return None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _backbone_identity(model: str) -> str:
    """The backbone's name and a hash of its architecture config (weights do not change timing)."""
    config = _backbone_config(model)
    if config is None:
        return f"{model} (unreadable; timed as {MINILM})"
    fields = {k: v for k, v in config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version", "architectures")}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return f"{model} config {digest[:16]}"


def _backbone_config(model: str) -> Any | None:
    """The backbone's transformers config from local files only (never the network), or None."""
    from transformers import AutoConfig

    from rewardlab.models.backbones import quiet_transformers, register_bow, resolve_backbone

    register_bow()
    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(resolve_backbone(model), local_files_only=True)
    except (OSError, ValueError, KeyError, ModelError):
        return None


# ---------------------------------------------------------------- the cache file

def cache_file() -> Path:
    """`$XDG_CACHE_HOME/rewardlab/precision.json` (`~/.cache/rewardlab/precision.json` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rewardlab" / "precision.json"


def _read_cache() -> dict[str, Calibration]:
    """The cached decisions; an unreadable, corrupt or foreign file reads as none (measured again)."""
    try:
        raw = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    entries = raw.get("entries") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        return {}
    out = {}
    for key, entry in entries.items():
        result = _calibration(entry.get("result") if isinstance(entry, dict) else None)
        if result is not None:
            out[str(key)] = result
    return out


def _calibration(raw: Any) -> Calibration | None:
    if not isinstance(raw, dict) or raw.get("precision") not in ("fp32", "bf16"):
        return None
    try:
        return Calibration(precision=str(raw["precision"]), speedup=float(raw["speedup"]),
                           fp32_ms=float(raw["fp32_ms"]), bf16_ms=float(raw["bf16_ms"]),
                           seconds=float(raw["seconds"]), reps=int(raw["reps"]))
    except (KeyError, TypeError, ValueError):
        return None


def _write_cache(key: str, parts: dict[str, str], result: Calibration) -> Path | None:
    """Add one decision, atomically (a reader never sees half a file); None if it cannot be
    written (a read-only home): the decision then holds for this process only."""
    path = cache_file()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        raw = {}
    entries = raw.get("entries") if isinstance(raw, dict) else None
    entries = {k: v for k, v in (entries.items() if isinstance(entries, dict) else ())
               if isinstance(v, dict) and _calibration(v.get("result")) is not None}  # drop bad ones
    entries[key] = {"key": parts, "result": dataclasses.asdict(result),
                    "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": 1, "entries": entries}, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot save the precision calibration to %s (%s)", path, e)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    return path


# ---------------------------------------------------------------- the measurement

def measure_precision(model: str, mode: str, *, budget_s: float = _BUDGET_S) -> Calibration:
    """Time `model`'s layers in fp32 and under bf16 autocast on this CPU (see the module doc).

    Leaves torch's random state as it was: a run seeds after this, a server never does.
    """
    config = _backbone_config(model) or _backbone_config(MINILM)
    start = time.perf_counter()  # after transformers' import (seconds, paid by the run anyway)
    with torch.random.fork_rng(devices=[]):
        net = _one_layer_model(config)
        vocab = int(net.config.vocab_size)
        stock = str(getattr(net.config, "_attn_implementation", "") or "")
        # training on a CPU swaps SDPA for eager attention under bf16 (training/fast): time that
        eager = mode == "train" and stock == "sdpa" and bool(net._can_set_attn_implementation())
        step = _train_step if mode == "train" else _infer_step
        positions = int(getattr(net.config, "max_position_embeddings", 0) or 1 << 30)

        def run(precision: str, length: int, rows: int = _ROWS[mode]) -> float:
            if eager:
                net.set_attn_implementation("eager" if precision == "bf16" else stock)
            ids = torch.randint(1, vocab, (rows, min(length, positions)))  # (R, T); 0: maybe pad
            began = time.perf_counter()
            step(net, ids, bf16=precision == "bf16")
            return time.perf_counter() - began

        for precision in ("fp32", "bf16"):  # first runs pay one-off set-up (thread pools, casts)
            run(precision, 32, rows=2)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for i, length in enumerate(_LENGTHS):
            if time.perf_counter() - start > budget_s and _settled(_ratios(times)):
                break
            for precision in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
                times[precision].append(run(precision, length))
    speedup = statistics.median(_ratios(times))
    return Calibration(precision=choose(speedup), speedup=round(speedup, 3),
                       fp32_ms=round(1e3 * statistics.median(times["fp32"]), 2),
                       bf16_ms=round(1e3 * statistics.median(times["bf16"]), 2),
                       seconds=round(time.perf_counter() - start, 2), reps=len(times["fp32"]))


def _ratios(times: dict[str, list[float]]) -> list[float]:
    """fp32 time / bf16 time of each repetition (same shapes, back to back)."""
    return [f / b for f, b in zip(times["fp32"], times["bf16"], strict=True)]


def _settled(ratios: list[float]) -> bool:
    """Enough repetitions to decide: _MIN_REPS, or two that agree by far (a busy machine or
    emulated bf16 can make one repetition take many seconds)."""
    clear = len(ratios) >= 2 and (max(ratios) < 1 / _CLEAR or min(ratios) > _CLEAR)
    return len(ratios) >= _MIN_REPS or clear


def _one_layer_model(config: Any) -> Any:
    """The backbone's architecture with one layer and a small vocabulary, random weights."""
    from transformers import AutoModelForSequenceClassification

    from rewardlab.models.backbones import quiet_transformers

    config = copy.deepcopy(config)
    config.num_hidden_layers = 1
    config.num_labels = 1
    config.vocab_size = min(int(config.vocab_size), _VOCAB_CAP)
    pad = getattr(config, "pad_token_id", None)
    # a decoder's score head finds each row's last token by the pad id: it needs one, in range
    config.pad_token_id = 0 if pad is None or pad >= config.vocab_size else pad
    with quiet_transformers():
        net = AutoModelForSequenceClassification.from_config(config)
    return net.float()


def _autocast(bf16: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def _train_step(net: Any, ids: torch.Tensor, *, bf16: bool) -> None:
    net.zero_grad(set_to_none=True)
    with _autocast(bf16):
        logits = net(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # (R, 1)
    logits.float().sum().backward()


def _infer_step(net: Any, ids: torch.Tensor, *, bf16: bool) -> None:
    with torch.inference_mode(), _autocast(bf16):
        net(input_ids=ids, attention_mask=torch.ones_like(ids))
