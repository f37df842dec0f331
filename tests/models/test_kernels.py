"""The compiled CPU row attention: bit-identical to the Python loop, off by switch, a fallback when
it cannot be built."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from rewardlab.models import kernels, packed
from rewardlab.models.kernels import compiled_kernels, kernels_enabled


@pytest.fixture
def fresh_kernels() -> Iterator[None]:
    """compiled_kernels() decides once per process; these tests decide again, then restore that."""
    compiled_kernels.cache_clear()
    yield
    compiled_kernels.cache_clear()


def _attention_and_grad(qkv: torch.Tensor, lengths: list[int], heads: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    x = qkv.detach().clone().requires_grad_()
    out = packed._RowAttention.apply(x, lengths, heads, 0.17)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out).to(out.dtype)  # every output counts
    (out * weights).sum().backward()
    return out.detach(), x.grad


@pytest.mark.skipif(not kernels_enabled(), reason="REWARDLAB_KERNELS=0 switches the kernels off")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_row_attention_is_bit_identical_to_the_python_loop(
        monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, threads: int) -> None:
    assert compiled_kernels() is not None, "the kernels must build here (g++ and ninja are installed)"
    torch.manual_seed(0)
    heads, lengths = 3, [5, 1, 17, 2, 9, 33, 1]  # one-token rows, more rows than threads
    qkv = torch.randn(sum(lengths), 3 * heads * 8, dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got, got_grad = _attention_and_grad(qkv, lengths, heads)
        monkeypatch.setattr(packed, "compiled_kernels", lambda: None)  # the Python loop
        want, want_grad = _attention_and_grad(qkv, lengths, heads)
    finally:
        torch.set_num_threads(before)
    if dtype == torch.bfloat16 or threads == 1:
        assert torch.equal(got, want)
        assert torch.equal(got_grad, want_grad)
    else:  # fp32 matmuls are MKL's, which split a reduction differently on 1 thread than on 2
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-6, atol=1e-6)
    assert got_grad.abs().sum() > 0  # the backward really ran


def test_kernels_switch_off_by_environment(monkeypatch: pytest.MonkeyPatch,
                                           fresh_kernels: None) -> None:
    monkeypatch.setenv("REWARDLAB_KERNELS", "0")
    assert not kernels_enabled()
    assert compiled_kernels() is None
    monkeypatch.setenv("REWARDLAB_KERNELS", "1")
    assert kernels_enabled()


def test_a_failed_build_warns_once_and_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                  caplog: pytest.LogCaptureFixture,
                                                  fresh_kernels: None) -> None:
    """No usable compiler: training must still run (the Python loop), and the user is told why."""
    monkeypatch.setenv("REWARDLAB_KERNELS", "1")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # no cached build to fall back on
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.INFO, logger="rewardlab"):
        assert compiled_kernels() is None
        assert compiled_kernels() is None  # decided once: no second build attempt
        out, grad = _attention_and_grad(torch.randn(5, 3 * 2 * 4), [3, 2], 2)  # the Python loop
    assert out.shape == (5, 8) and bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "rewardlab" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "compiled CPU attention unavailable" in warnings[0]
    assert "Python loop" in warnings[0]
    assert str(tmp_path) in warnings[0]  # where it tried to build
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no half build left to load later


_LOAD = ("import sys; from rewardlab.models.kernels import compiled_kernels; "
         "sys.exit(0 if compiled_kernels() is not None else 'no kernels')")


@pytest.mark.skipif(not kernels_enabled(), reason="REWARDLAB_KERNELS=0 switches the kernels off")
def test_a_second_process_loads_the_build_without_building() -> None:
    """The first process here builds (saying so on stderr) unless a build is cached; the next one
    in the same environment loads it, silently."""
    final = kernels._cache_root() / kernels.module_name(
        kernels.current_build_env(kernels._cache_root()))
    cached = final.is_dir()
    runs = [subprocess.run([sys.executable, "-c", _LOAD], capture_output=True, text=True,
                           timeout=900, check=False) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    building = "rewardlab: building the CPU attention kernel (once, ~30 s) ..."
    # (or it waited for another process, a test run beside this one, building it)
    assert cached or building in runs[0].stderr or "waiting for another" in runs[0].stderr
    assert not (cached and building in runs[0].stderr), runs[0].stderr
    assert "building" not in runs[1].stderr and "waiting" not in runs[1].stderr, runs[1].stderr
    assert (final / f"{final.name}.so").is_file()
