"""On CUDA GPUs (marked `gpu`; skipped without them): `compare --gpus-per-run 2` trains each run as
one accelerate job of 2 processes on its 2 GPUs (NCCL), and gives the results of the same compare
trained one process per run. The CPU side of the same job (2 gloo processes) is checked in
tests/experiment/test_multi_gpu_run.py; this is the part a CPU cannot check: `--multi_gpu`, the
GPUs the executor hands each run, NCCL. A machine with fewer GPUs than a run asks for refuses it
before any work (that test runs on the one-GPU machine lent for minutes).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from tests._gpu_compare import run_compare
from tests._tiny import make_tiny_decoder

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# 2 seeds × 2 conditions = 4 runs of the tiny Qwen2; each step 2 micro-batches of 8 pairs, which
# the 2 processes of a run share (one each): the steps of the one-process run
COMPARE = ["compare", "--train", "synthetic:n=96,noise=0.2,seed=0", "--test-fraction", "0.25",
           "--seeds", "2", "--conditions", "unfiltered,random", "--max-length", "64",
           "--batch-size", "8", "--grad-accum", "2", "--lr", "3e-3", "--precision", "fp32",
           "--detectors", "oof_margin", "--logging-steps", "1", "--json"]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen2")))


def _compare(decoder: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_compare(COMPARE, decoder, out, *extra)


def _runs(proc: subprocess.CompletedProcess[str], out: Path) -> list[dict[str, Any]]:
    """Every run's record of a finished compare, conditions in order, seeds in order."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    return [run for condition in results["conditions"].values() for run in condition["runs"]]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_compare_with_two_gpus_per_run_gives_the_one_process_results(decoder: str,
                                                                    tmp_path: Path) -> None:
    """Each run on 2 GPUs takes the one-process run's steps; what differs is float rounding (NCCL
    sums the two gradients, one process sums them in one buffer), held to docs/distributed.md's
    promise: the first three losses to 1e-5, the curve to 2e-2, test accuracy within 1 pair."""
    one = _runs(_compare(decoder, tmp_path / "one", "--gpus-per-run", "1"), tmp_path / "one")
    two = _runs(_compare(decoder, tmp_path / "two", "--workers", "1", "--gpus-per-run", "2"),
                tmp_path / "two")
    assert len(two) == len(one) == 4
    for a, b in zip(two, one):
        assert (a["seed"], a["train_pairs"], a["selection"]) == (b["seed"], b["train_pairs"],
                                                                b["selection"])
        losses_a, losses_b = ([h["loss"] for h in r["history"]] for r in (a, b))
        assert len(losses_a) == len(losses_b) > 3
        assert losses_a[:3] == pytest.approx(losses_b[:3], abs=1e-5)
        assert losses_a == pytest.approx(losses_b, abs=2e-2)
        assert a["test"]["n"] == b["test"]["n"]
        assert abs(a["test"]["correct"] - b["test"]["correct"]) <= 1


def test_compare_refuses_more_gpus_per_run_than_the_machine_has(decoder: str,
                                                                 tmp_path: Path) -> None:
    """Never two processes of a run on one GPU: a run on one GPU more than the machine shows is
    refused, one line, exit 2, before anything is ingested or trained."""
    gpus = torch.cuda.device_count()
    asked = str(gpus + 1)
    proc = _compare(decoder, tmp_path / "out", "--gpus-per-run", asked, "--grad-accum", asked)
    assert proc.returncode == 2
    assert f"--gpus-per-run {asked} needs {asked} GPUs; this machine shows {gpus}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out" / "results.json").exists()
    assert not (tmp_path / "out.db").exists()
