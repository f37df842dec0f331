"""`auto` precision on a CPU: chosen by a calibration on this machine, cached, overridable.

The measurement is injected (a fake `measure_precision`) where the test is about the choice and the
cache; one test runs the real calibration end to end on a tiny BERT. Every test keeps the cache in
its own tmp_path (XDG_CACHE_HOME) and pretends the CPU has native bf16 (else nothing is measured).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rewardlab.errors import ModelError
from rewardlab.models.names import BOW, MINILM
from rewardlab.training import precision
from rewardlab.training.precision import AUTO_ENV, Calibration, cache_file, choose
from rewardlab.training.runtime import resolve_precision
from tests._tiny import make_tiny_backbone, make_tiny_decoder

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache and process memory per test, a CPU with native bf16, one process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(AUTO_ENV, raising=False)
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "RANK",
                 "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(precision, "_decided", {})
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    return tmp_path / "cache" / "rewardlab" / "precision.json"


class FakeMeasure:
    """A calibration that 'measures' a fixed bf16 speed-up and counts its calls."""

    def __init__(self, speedup: float) -> None:
        self.speedup = speedup
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model: str, mode: str, **_: object) -> Calibration:
        self.calls.append((model, mode))
        return Calibration(precision=choose(self.speedup), speedup=self.speedup, fp32_ms=100.0,
                           bf16_ms=100.0 / self.speedup, seconds=0.5, reps=3)


def fake(monkeypatch: pytest.MonkeyPatch, speedup: float) -> FakeMeasure:
    measure = FakeMeasure(speedup)
    monkeypatch.setattr(precision, "measure_precision", measure)
    return measure


def auto(model: str = MINILM, mode: str = "train") -> str:
    return resolve_precision("auto", model=model, device=CPU, mode=mode)


def forget() -> None:
    """A new process: nothing remembered but the cache file."""
    precision._decided.clear()


@pytest.mark.parametrize(("speedup", "want"), [(0.45, "fp32"),   # AMX-like: bf16 slower
                                                (1.03, "fp32"),   # within the 5% margin
                                                (1.62, "bf16")])  # avx512_bf16-like
def test_auto_takes_what_measured_faster_and_caches_it(
        speedup: float, want: str, monkeypatch: pytest.MonkeyPatch, own_cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    measure = fake(monkeypatch, speedup)
    assert auto() == want  # the old flag rule said bf16 for every one of these (native bf16)
    assert measure.calls == [(MINILM, "train")]
    said = capsys.readouterr().err
    assert f"rewardlab: precision auto -> {want} (measured {speedup:.2f}x fp32 on " in said
    entry, = json.loads(own_cache.read_text())["entries"].values()
    assert entry["result"]["precision"] == want and entry["result"]["speedup"] == speedup
    assert entry["key"]["mode"] == "train" and entry["key"]["backbone"].startswith("minilm config ")
    assert auto() == want and len(measure.calls) == 1  # this process: remembered, said once
    assert capsys.readouterr().err == ""
    forget()
    assert auto() == want and len(measure.calls) == 1  # the next process: from the cache
    assert "cached)" in capsys.readouterr().err


def test_train_and_infer_are_measured_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    measure = fake(monkeypatch, 1.3)
    assert auto(mode="train") == auto(mode="infer") == "bf16"
    assert measure.calls == [(MINILM, "train"), (MINILM, "infer")]


def test_the_cache_is_measured_again_when_torch_the_cpu_or_the_backbone_changes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    measure = fake(monkeypatch, 1.6)
    auto()
    with monkeypatch.context() as m:
        m.setattr(torch, "__version__", "9.9.0+cpu")
        auto()
        assert len(measure.calls) == 2  # another torch
    with monkeypatch.context() as m:
        m.setattr(precision, "cpu_model", lambda: "Intel(R) Xeon(R) Platinum 8488C")
        auto()
        assert len(measure.calls) == 3  # another CPU
    with monkeypatch.context() as m:
        m.setattr(precision, "_cores", lambda: 64)
        auto()
        assert len(measure.calls) == 4  # another share of cores
    tiny = str(make_tiny_backbone(tmp_path / "tiny"))
    auto(tiny)
    assert measure.calls[-1] == (tiny, "train")  # another backbone
    forget()
    auto()
    auto(tiny)
    assert len(measure.calls) == 5  # back on the first machine and torch: both cached
    assert len(json.loads(cache_file().read_text())["entries"]) == 5


def test_an_explicit_precision_or_the_flag_rule_never_measures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    measure = fake(monkeypatch, 0.5)
    for given in ("fp32", "bf16"):
        for mode in ("train", "infer"):
            assert resolve_precision(given, model=MINILM, device=CPU, mode=mode) == given
    assert auto(BOW) == "fp32"
    monkeypatch.setenv(AUTO_ENV, "flag")
    assert auto() == "bf16"  # the CPU flag's rule, as before issue 34
    monkeypatch.setenv(AUTO_ENV, "sometimes")
    with pytest.raises(ModelError, match=f"{AUTO_ENV}='sometimes'"):
        auto()
    monkeypatch.delenv(AUTO_ENV)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert auto() == "fp32"  # emulated bf16: always slower, not measured
    assert measure.calls == []
    assert not cache_file().exists()


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"entries": []}', b"\xff\xfe\x00",
                                     pickle.dumps({"entries": {}}), b"",
                                     b'{"entries": {"KEY": {"result": {"precision": "fp16"}}}}'])
def test_a_corrupt_cache_is_measured_again(content: bytes, monkeypatch: pytest.MonkeyPatch,
                                           own_cache: Path) -> None:
    own_cache.parent.mkdir(parents=True)
    own_cache.write_bytes(content)
    measure = fake(monkeypatch, 1.4)
    assert auto() == "bf16" and len(measure.calls) == 1
    assert len(json.loads(own_cache.read_text())["entries"]) == 1  # rewritten as valid JSON


def test_a_cached_entry_with_bad_fields_is_measured_again(monkeypatch: pytest.MonkeyPatch,
                                                          own_cache: Path) -> None:
    fake(monkeypatch, 0.5)
    auto()
    raw = json.loads(own_cache.read_text())
    for entry in raw["entries"].values():
        entry["result"]["speedup"] = "fast"
    own_cache.write_text(json.dumps(raw))
    forget()
    measure = fake(monkeypatch, 1.6)
    assert auto() == "bf16" and len(measure.calls) == 1


def test_an_unwritable_cache_still_decides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    measure = fake(monkeypatch, 0.7)
    assert auto() == "fp32" and auto() == "fp32" and len(measure.calls) == 1


def test_several_processes_use_the_cache_and_never_measure(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    measure = fake(monkeypatch, 0.5)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert auto() == "bf16"  # not measured: each rank could time a different share of the cores
    assert measure.calls == [] and "not measured in a run of several" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    forget()
    assert auto() == "fp32" and len(measure.calls) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    forget()
    assert auto() == "fp32" and len(measure.calls) == 1  # the measured decision, from the cache
    assert "cached)" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")
    forget()
    assert auto() == "fp32" and capsys.readouterr().err == ""  # said by the first process only


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_the_real_calibration_on_a_tiny_model(mode: str, tmp_path: Path, own_cache: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    tiny = str(make_tiny_backbone(tmp_path / "tiny"))
    state = torch.random.get_rng_state()
    chosen = auto(tiny, mode)
    assert chosen in ("fp32", "bf16")
    assert torch.equal(torch.random.get_rng_state(), state)  # a run's seed is left alone
    entry, = json.loads(own_cache.read_text())["entries"].values()
    result = entry["result"]
    assert result["precision"] == chosen == choose(result["speedup"])
    assert result["reps"] >= 2 and result["speedup"] > 0
    assert result["fp32_ms"] > 0 and result["bf16_ms"] > 0
    assert entry["key"]["backbone"].startswith(f"{tiny} config ") and entry["key"]["mode"] == mode
    assert f"precision auto -> {chosen} (measured" in capsys.readouterr().err


def test_an_unreadable_backbone_is_timed_as_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    measure: Callable[..., Calibration] = fake(monkeypatch, 1.6)
    assert auto("transformer") == "bf16"  # what the server passes today: no config to read
    entry, = json.loads(cache_file().read_text())["entries"].values()
    assert entry["key"]["backbone"] == "transformer (unreadable; timed as minilm)"
    assert isinstance(measure, FakeMeasure) and measure.calls == [("transformer", "train")]


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2"])
def test_the_calibration_times_decoders_too(arch: str, tmp_path: Path) -> None:
    decoder = str(make_tiny_decoder(tmp_path / arch, arch))
    result = precision.measure_precision(decoder, "train", budget_s=0)
    assert result.reps >= 2 and result.fp32_ms > 0 and result.bf16_ms > 0
    assert result.precision == choose(result.speedup)
