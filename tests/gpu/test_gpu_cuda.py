"""On a CUDA GPU (marked `gpu`; skipped without one): bf16 autocast, fp16 LoRA, the decoder path,
`serve` and `compare --workers N --gpus-per-run 1` run there and give the numbers the CPU tests
expect (one GPU per run: a one-GPU machine, the one lent for minutes, runs N = 1 and is checked to
refuse N = 2). `scripts/gpu_check.sh` runs these first on a lent GPU machine; CI collects them and they
skip. Tiny Qwen2 reward models (tests/_tiny.py) with their own BPE tokenizer: nothing to download.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.evaluation.evaluate import evaluate_reward_model
from rewardlab.models.input_rule import dialogue_messages
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.loop import TrainResult, train_reward_model
from rewardlab.training.train_config import TrainConfig
from rewardlab.web.serve import ServeConfig, create_serve_app
from rewardlab.web.server import background_server
from tests._gpu_compare import run_compare
from tests._tiny import make_tiny_decoder, planted_pairs

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPTS = ["Human: question 1: apple kite", "Human: hi\n\nAssistant: hello\n\nHuman: fish?",
           "Human: " + " ".join(["lemon mango"] * 40)]  # the last cut at max_length 64
RESPONSES = ["wonderful dog", "fish river stone", "tiger wonderful"]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen2")))


def _train(decoder: str, out: Path | None = None, **overrides: Any) -> TrainResult:
    """The CPU decoder test's run (tests/models/test_decoder.py): 48 planted pairs, 3 epochs."""
    values: dict[str, Any] = {"model": decoder, "epochs": 3, "batch_size": 8, "lr": 3e-3,
                              "max_length": 64, "logging_steps": 1}
    config = TrainConfig(**{**values, **overrides})
    return train_reward_model(planted_pairs(48), config=config, output_dir=out, progress=False)


def _learned(result: TrainResult) -> None:
    losses = [h["loss"] for h in result.history]
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])  # ln 2 ≈ 0.69 at the start
    test = evaluate_reward_model(result.model, planted_pairs(32, seed=7, split="test"),
                                 progress=False)
    assert test.metrics["accuracy"] > 0.85


@pytest.fixture(scope="module")
def trained_fp32(decoder: str, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _train(decoder, tmp_path_factory.mktemp("fp32") / "m", precision="fp32")


def test_auto_precision_is_bf16_autocast_on_the_gpu_and_learns(decoder: str,
                                                               trained_fp32: TrainResult) -> None:
    result = _train(decoder, precision="auto")
    assert result.precision == "bf16" and result.model.device.type == "cuda"
    assert result.model.model.dtype == torch.float32  # autocast: the weights stay fp32
    _learned(result)
    # the same init and batches as the fp32 run: close at the first step, yet bf16 really ran
    first_bf16, first_fp32 = result.history[0]["loss"], trained_fp32.history[0]["loss"]
    assert first_bf16 == pytest.approx(first_fp32, abs=2e-2) and first_bf16 != first_fp32


def test_fp16_lora_trains_a_frozen_fp16_base_and_saves_fp16(decoder: str, tmp_path: Path) -> None:
    result = _train(decoder, tmp_path / "m", lora_r=8, epochs=4, batch_size=4, lr=1e-2,
                    precision="fp32", torch_dtype="fp16")
    assert result.model.model.dtype == torch.float16 and result.model.device.type == "cuda"
    losses = [h["loss"] for h in result.history]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.3
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float16}
    reloaded = RewardModel.load(tmp_path / "m")  # the merged checkpoint scores as trained
    assert reloaded.score(PROMPTS, RESPONSES) == pytest.approx(
        result.model.score(PROMPTS, RESPONSES), rel=1e-3, abs=1e-3)


def _plain_cpu_scores(checkpoint: Path) -> list[float]:
    """The model card's recipe, in plain transformers on the CPU: chat template, last 64 tokens."""
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    scores = []
    for prompt, response in zip(PROMPTS, RESPONSES):
        text = tok.apply_chat_template(dialogue_messages(prompt, response), tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"][-64:]
        with torch.inference_mode():
            scores.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    return scores


def test_the_decoder_path_trains_on_the_gpu_and_scores_as_plain_transformers_on_cpu(
        trained_fp32: TrainResult) -> None:
    assert trained_fp32.model.device.type == "cuda" and trained_fp32.precision == "fp32"
    assert trained_fp32.model.input_rule == "chat-template"
    _learned(trained_fp32)
    assert trained_fp32.output_dir is not None
    on_gpu = RewardModel.load(trained_fp32.output_dir)
    assert on_gpu.device.type == "cuda"
    gpu = on_gpu.score(PROMPTS, RESPONSES)
    assert gpu == pytest.approx(_plain_cpu_scores(trained_fp32.output_dir), rel=1e-4, abs=1e-4)
    assert len(set(gpu)) == 3


def test_serve_runs_on_the_gpu_in_bf16_and_in_fp32(trained_fp32: TrainResult) -> None:
    assert trained_fp32.output_dir is not None
    rm = RewardModel.load(trained_fp32.output_dir)
    expected = np.array(rm.score(PROMPTS, RESPONSES))
    queries = [f"\n\n{p}\n\nAssistant: {r}" for p, r in zip(PROMPTS, RESPONSES)]
    got = {}
    for precision in ("auto", "fp32"):
        app = create_serve_app(rm, ServeConfig(precision=precision, max_wait_ms=5))
        with background_server(app) as url, httpx.Client(timeout=120) as http:
            serving = http.get(f"{url}/info").json()["serving"]
            assert serving["device"].startswith("cuda")
            assert serving["precision"] == ("bf16" if precision == "auto" else "fp32")
            got[precision] = np.array(http.post(f"{url}/get_reward",
                                                json={"query": queries}).json()["rewards"])
    assert got["fp32"] == pytest.approx(expected, abs=1e-4)
    assert np.abs(got["auto"] - expected).max() < 0.05 * max(1.0, np.abs(expected).max())
    assert not np.allclose(got["auto"], expected, rtol=0, atol=1e-7)  # bf16 really ran


# --- compare --workers with one GPU per run ---------------------------------------------------------

COMPARE = ["compare", "--train", "synthetic:n=96,noise=0.2,seed=0", "--test-fraction", "0.25",
           "--seeds", "2", "--conditions", "unfiltered,random", "--max-length", "64",
           "--batch-size", "8", "--lr", "3e-3", "--precision", "fp32", "--detectors", "oof_margin",
           "--json"]


VARYING = ("created", "seconds", "runs_reused",  # when and how long (test_resume_compare.py)
           "workers", "gpus_per_run", "retries", "ray")  # how the runs were spread
# and every memory figure (`peak_rss_mb`, …): a process's own, not the experiment's


def _same(a: Any, b: Any, where: str = "results") -> None:
    """results.json `a` equals `b` but for VARYING keys; floats to 1e-5 (GPU kernels in two
    processes: deterministic cuBLAS, yet not promised bit for bit)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {k for k in a.keys() | b.keys() if k not in VARYING and not k.endswith("_mb")}
        for k in sorted(keys):
            assert k in a and k in b, f"{where}.{k}: in one results.json only"
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b)), (
            f"{where}: {a} vs {b}")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _compare(decoder: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_compare(COMPARE, decoder, out, *extra)


def _results(proc: subprocess.CompletedProcess[str], out: Path) -> Any:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text().replace(str(out), "OUT"))


def test_compare_workers_with_one_gpu_per_run_equals_one_process(decoder: str,
                                                                  tmp_path: Path) -> None:
    """`--workers W --gpus-per-run 1`, W = the GPUs here up to 2: each run in its own process on
    its own GPU (one GPU: W = 1, the runs one after another in this process, on the GPU), the same
    results.json as a plain compare."""
    workers = min(2, torch.cuda.device_count())
    one = _results(_compare(decoder, tmp_path / "one"), tmp_path / "one")
    fan = tmp_path / "fan"
    fanned = _results(_compare(decoder, fan, "--workers", str(workers), "--gpus-per-run", "1"), fan)
    assert sum(len(c["runs"]) for c in fanned["conditions"].values()) == 4
    assert fanned["config"]["workers"] == workers and fanned["config"]["gpus_per_run"] == 1
    _same(fanned, one)


def test_compare_refuses_more_workers_than_gpus_before_work(decoder: str, tmp_path: Path) -> None:
    """Never two runs on one GPU: one worker more than the GPUs here is refused, one line, exit 2,
    before anything is ingested or trained."""
    gpus = torch.cuda.device_count()
    proc = _compare(decoder, tmp_path / "out", "--workers", str(gpus + 1), "--gpus-per-run", "1")
    assert proc.returncode == 2
    assert f"needs {gpus + 1} GPUs; this machine shows {gpus}" in proc.stderr
    assert not (tmp_path / "out" / "results.json").exists()
    assert not (tmp_path / "out.db").exists()


def test_rated_prompts_train_with_the_tie_model_on_the_gpu(tmp_path: Path) -> None:
    """Issue 32 on CUDA: the tie parameter sits on the model's device (one device for the fused
    AdamW and the tie loss), trains, and a checkpoint of it resumes to the uninterrupted run."""
    from rewardlab.data.synthetic import read_synthetic_rated
    from rewardlab.training.grouped import train_on_rated

    prompts = read_synthetic_rated("synthetic:n=48,k=4,ties=0.2,seed=0", split="train").prompts
    config = TrainConfig(model="bow", precision="fp32", ties="model", batch_size=4, epochs=2,
                         logging_steps=1, seed=0, max_length=64)
    whole = train_on_rated(prompts, config=config, progress=False)
    assert whole.tie_parameter is not None and abs(whole.tie_parameter - 0.5) > 1e-2  # it moved
    cut = tmp_path / "cut"
    train_on_rated(prompts, config=dataclasses.replace(config, max_steps=5), output_dir=cut,
                   progress=False)
    resumed = train_on_rated(prompts, config=config, output_dir=cut, resume=True, progress=False)
    assert resumed.tie_parameter == pytest.approx(whole.tie_parameter, rel=1e-4)
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in whole.history], abs=1e-4)
