"""The main job without the hub: `compare --train hh-rlhf` says so in one line at once (no retries)
and runs on the bundled HH-RLHF sample; results and report name the data used."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import rewardlab.data.sources as sources
import rewardlab.models.backbones as backbones
from rewardlab.cli.main import main
from rewardlab.experiment.compare import CompareConfig, _offline_fallback

TINY = ["--model", "bow", "--max-pairs", "40", "--seeds", "1", "--conditions", "unfiltered",
        "--detectors", "empty_response", "--max-length", "64"]


def _no_hub(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the hub was tried although it is unreachable")


def test_compare_without_the_hub_runs_on_the_bundled_sample(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sources, "_load_hub_split", _no_hub)
    monkeypatch.setattr(backbones, "hub_unreachable", lambda: "HF_HUB_OFFLINE is set")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="rewardlab"):
        code = main(["compare", "--train", "hh-rlhf", *TINY, "-o", str(out),
                     "--db", f"sqlite:///{tmp_path}/t.db", "--json"])
    assert code == 0
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    assert "HF_HUB_OFFLINE is set" in said[0] and "hh-rlhf-sample" in said[0]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["data"]["train"]["source"] == "hh-rlhf-sample"
    assert results["data"]["test"]["source"] == "hh-rlhf-sample"
    assert results["config"]["train"] == "hh-rlhf-sample"
    assert "Training data: hh-rlhf-sample" in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("train", ["hh-rlhf", "hh-rlhf:helpful-base"])
def test_a_hub_source_is_kept_when_the_hub_answers(train: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "hub_unreachable", lambda: None)
    config = CompareConfig(train=train)
    assert _offline_fallback(config) is config


@pytest.mark.parametrize("train", ["synthetic:n=10", "some/file.jsonl", "hh-rlhf-sample"])
def test_other_sources_never_fall_back(train: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "hub_unreachable", _no_hub)  # not even asked
    config = CompareConfig(train=train)
    assert _offline_fallback(config) is config


def test_a_hub_test_source_follows_the_train_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "hub_unreachable", lambda: "no route")
    config = _offline_fallback(CompareConfig(train="hh-rlhf:harmless-base",
                                             test="hh-rlhf:harmless-base"))
    # the sample is split 70/30 itself; a hub test source cannot be read either
    assert (config.train, config.test) == ("hh-rlhf-sample", None)
