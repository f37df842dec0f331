"""The GPU check's figures: decoder reward-model training vs TRL's RewardTrainer with model-FLOPs
utilisation, and `rewardlab serve` vs a naive per-request endpoint, on a random Qwen2 with
Qwen2.5-0.5B's shapes; one JSON. scripts/gpu_check.sh runs the steps, each under its own time limit.

    python benchmarks/gpu_bench.py train  --work DIR   # train_throughput.py: rewardlab vs TRL
    python benchmarks/gpu_bench.py serve  --work DIR   # serve_load.py on the same model
    python benchmarks/gpu_bench.py report --work DIR -o gpu_check.json   # + the gpu tests' junit
    # --tiny: a 2-layer, 64-wide model and a few pairs, fp32: the CPU pass of --dry-run

The model: Qwen2.5-0.5B's layers (896 wide, 24 layers, 14 heads / 2 key-value heads, MLP 4864)
with random weights and a 4,096-token BPE vocabulary trained on the HH-RLHF sample (built by
train_throughput.py --make-decoder: nothing to download). Its matmuls are Qwen2.5-0.5B's but for
the vocabulary, which a sequence-classification model only looks up (no LM head): its FLOPs per
token are the real model's. Both trainers get the same token ids (the chat template), bf16 autocast,
batch 8 pairs, max length 1024, the same pairs and seeds, each in a fresh process.

MFU = model FLOPs / seconds / the card's dense bf16 peak (H100 SXM and H200: 989 TFLOP/s), with
model FLOPs = 6 N T + 12 L d Σ t² over the real (unpadded) tokens of every training forward (N the
matmul weights, T their tokens, t each sequence's length; attention counted in full, as PaLM's
appendix B does). Padding is not counted: what padding costs is lost utilisation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# Qwen2.5-0.5B's layer shapes; tiny: a CPU pass that exercises every step in seconds
SHAPES = {"full": {"width": 896, "layers": 24, "intermediate": 4864, "kv_heads": 2},
          "tiny": {"width": 64, "layers": 2, "intermediate": 128, "kv_heads": 1}}
TRAIN = {"full": {"pairs": 800, "test_pairs": 64, "reps": 2, "max_length": 1024,
                  "precision": "bf16"},
         "tiny": {"pairs": 8, "test_pairs": 8, "reps": 1, "max_length": 128, "precision": "fp32"}}
SERVE = {"full": {"clients": 64, "requests": 8, "reps": 1, "servers": "rewardlab,naive,naive-bf16",
                  "precision": "auto"},
         "tiny": {"clients": 2, "requests": 2, "reps": 1, "servers": "rewardlab,naive",
                  "precision": "fp32"}}
# dense bf16 peak per card, by a piece of torch.cuda.get_device_name() (first match wins)
BF16_PEAK = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
             ("H800", 989e12), ("A100", 312e12))


def bf16_peak(name: str) -> float | None:
    """The dense bf16 FLOP/s of a card named `name`, None when unknown.

    >>> bf16_peak("NVIDIA H100 80GB HBM3"), bf16_peak("NVIDIA H200"), bf16_peak("cpu")
    (989000000000000.0, 989000000000000.0, None)
    """
    return next((peak for key, peak in BF16_PEAK if key.lower() in name.lower()), None)


def sample_path() -> str:
    """The HH-RLHF sample rewardlab ships (the ../shared copy does not travel to a GPU machine)."""
    from rewardlab.data.sources import sample_path as shipped

    return str(shipped())


def make_model(work: Path, size: str) -> Path:
    """The random Qwen2 (train_throughput.make_decoder), built once per work folder."""
    directory = work / "qwen2"
    if not (directory / "config.json").is_file():
        sys.path.insert(0, str(BENCH))
        from train_throughput import make_decoder

        make_decoder(directory, Path(sample_path()), **SHAPES[size])
    return directory


def run_train(work: Path, size: str) -> None:
    """rewardlab vs TRL, interleaved, each measurement in its own process (train_throughput.py)."""
    t = TRAIN[size]
    model = make_model(work, size)
    cmd = [sys.executable, str(BENCH / "train_throughput.py"), "--model", str(model),
           "--data", sample_path(), "--batch-size", "8",
           "--max-length", str(t["max_length"]), "--precision", t["precision"],
           "--pairs", str(t["pairs"]), "--test-pairs", str(t["test_pairs"]),
           "--output", str(work / "train.json")]
    if subprocess.run([*cmd, "--paths", "rewardlab,trl", "--reps", str(t["reps"])]).returncode:
        # TRL broke there (its versions are the machine's): rewardlab's own figures still count
        print("gpu_bench: the TRL comparison failed; rewardlab alone, once", flush=True)
        subprocess.run([*cmd, "--paths", "rewardlab", "--reps", "1"], check=True)
        sys.exit(1)


def run_serve(work: Path, size: str) -> None:
    """`rewardlab serve` vs the naive endpoint on the same checkpoint (serve_load.py)."""
    s = SERVE[size]
    model = make_model(work, size)
    cmd = [sys.executable, str(BENCH / "serve_load.py"), "--model", str(model),
           "--max-length", str(TRAIN[size]["max_length"]), "--clients", str(s["clients"]),
           "--requests", str(s["requests"]), "--reps", str(s["reps"]), "--servers", s["servers"],
           "--precision", s["precision"], "-o", str(work / "serve.json")]
    subprocess.run(cmd, check=True)


# --- the report -----------------------------------------------------------------------------------
def model_shape(directory: Path) -> dict[str, int]:
    """Matmul weights N (every nn.Linear, the score head too), layers L and width d, counted on
    the meta device (no memory, no init)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return {"matmul_params": matmul, "params": sum(p.numel() for p in model.parameters()),
            "layers": config.num_hidden_layers, "width": config.hidden_size}


def training_flops(run: dict[str, Any], shape: dict[str, int]) -> float | None:
    """6 N T + 12 L d Σ t² for one measurement's training forwards (None: not recorded)."""
    if not run.get("tokens"):
        return None
    return (6 * shape["matmul_params"] * run["tokens"]
            + 12 * shape["layers"] * shape["width"] * run["tokens_squared"])


def device_facts() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                             "gpu": None, "bf16_peak_tflops": None}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = bf16_peak(name)
        facts |= {"gpu": name, "gpus": torch.cuda.device_count(),
                  "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                  "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
                  "bf16_peak_tflops": peak / 1e12 if peak else None}
    return facts


def train_figures(work: Path, peak: float | None) -> dict[str, Any] | None:
    """Per path: pairs/s (whole call, steps alone), achieved TFLOP/s and MFU of the steps."""
    path = work / "train.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    shape = model_shape(work / "qwen2")
    per_path: dict[str, dict[str, Any]] = {}
    for run in data["runs"]:
        flops = training_flops(run, shape)
        tflops = flops / run["steps_seconds"] / 1e12 if flops and run.get("steps_seconds") else None
        row = per_path.setdefault(run["path"], {"runs": []})
        row["runs"].append({k: run.get(k) for k in (
            "seed", "train_pairs", "train_pairs_per_s", "steps_pairs_per_s", "steps_seconds",
            "train_seconds", "tokens", "padding_share", "forwards_per_step", "precision",
            "train_loss", "test_accuracy", "peak_rss_mb")} | {"steps_tflops": tflops})
    for row in per_path.values():
        tflops = [r["steps_tflops"] for r in row["runs"] if r["steps_tflops"]]
        row["steps_tflops"] = statistics.median(tflops) if tflops else None
        row["mfu"] = row["steps_tflops"] * 1e12 / peak if peak and row["steps_tflops"] else None
        for key in ("train_pairs_per_s", "steps_pairs_per_s"):
            values = [r[key] for r in row["runs"] if r[key]]
            row[key] = statistics.median(values) if values else None
    return {"model": shape, "workload": {k: data["meta"]["args"].get(k) for k in (
        "batch_size", "max_length", "precision", "pairs", "test_pairs", "reps")},
            "paths": per_path, "paired_ratios": data.get("paired_ratios")}


def serve_figures(work: Path) -> dict[str, Any] | None:
    path = work / "serve.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {"load": {k: data["args"][k] for k in ("clients", "requests", "queries_per_request",
                                                  "max_batch", "max_wait_ms", "max_length")},
            **data["summary"]}


def test_figures(junit: Path) -> dict[str, Any] | None:
    """pytest's junit XML: counts, and each test that failed with its message's first line."""
    if not junit.is_file():
        return None
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    failed = []
    for case in suite.iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            failed.append({"test": case.get("name"), "message": message[0][:300] if message else ""})
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {
        "seconds": float(suite.get("time", 0)), "failed": failed}


def report(work: Path, output: Path, steps: list[str]) -> dict[str, Any]:
    """ONE JSON of every figure the check made (a step that failed or ran out of time: null)."""
    device = device_facts()
    peak = device["bf16_peak_tflops"] * 1e12 if device["bf16_peak_tflops"] else None
    env = work / "env.json"  # gpu_env.py installed: versions there, unmet requirements
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device,
              "packages": json.loads(env.read_text()) if env.is_file() else None,
              # each step's exit status: 0 done, 124 out of its time, else failed
              "steps": {name: int(rc) for name, rc in (s.split("=", 1) for s in steps)},
              "tests": test_figures(work / "tests.xml"), "train": train_figures(work, peak),
              "serve": serve_figures(work), "commit": _commit(), "cpu_count": os.cpu_count()}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2))
    return record


def _commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH, capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["train", "serve", "report"])
    parser.add_argument("--work", type=Path, required=True, help="folder for the steps' files")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and workload (CPU pass)")
    parser.add_argument("-o", "--output", type=Path, help="report: the JSON to write")
    parser.add_argument("--step-status", action="append", default=[], metavar="STEP=RC",
                        help="report: each step's exit status, as the check saw it")
    args = parser.parse_args()
    if args.step == "report" and not args.output:
        parser.error("report needs -o/--output")
    args.work.mkdir(parents=True, exist_ok=True)
    size = "tiny" if args.tiny else "full"
    if args.step == "train":
        run_train(args.work, size)
    elif args.step == "serve":
        run_serve(args.work, size)
    else:
        record = report(args.work, args.output, args.step_status)
        print(json.dumps({k: record[k] for k in ("device", "steps", "tests")}, indent=1))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
