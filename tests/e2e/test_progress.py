"""What a user sees on stderr while commands run: a bar on every long step (evaluation, each
detector, the embedding detector's encoding), no third-party INFO lines, `--help` without doubled
defaults."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from rewardlab.cli.main import main
from rewardlab.data.source_result import SourceResult
from rewardlab.evaluation.evaluate import evaluate_reward_model
from rewardlab.flags.detectors import embedding
from rewardlab.flags.detectors.embedding import NearDuplicateResponses, _load_encoder
from rewardlab.flags.flagging import flag_dataset
from rewardlab.models.reward_model import RewardModel
from rewardlab.store.store import Store
from tests._tiny import make_tiny_backbone, planted_pairs


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> RewardModel:
    return RewardModel.load(make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert")))


@pytest.mark.parametrize("progress", [True, False])
def test_evaluate_draws_a_bar_on_stderr_only_with_progress(model: RewardModel, progress: bool,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    evaluate_reward_model(model, planted_pairs(12, seed=1, split="test"), batch_size=4,
                          progress=progress)
    out, err = capsys.readouterr()
    assert out == ""
    # (2N,) sequences: both sides of every pair are scored
    assert ("evaluate" in err and "24/24" in err) is progress, err


def test_flag_bar_names_the_detector_it_runs(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(f"sqlite:///{tmp_path}/t.db")
    pairs = planted_pairs(10, seed=2)
    store.ingest("p", SourceResult(spec="planted", pairs=pairs, read=len(pairs), rejected=[]))
    flag_dataset(store, "p", detectors=["empty_response", "identical_responses"], progress=True)
    err = capsys.readouterr().err
    assert "empty_response" in err and "identical_responses" in err and "2/2" in err, err
    store.close()


@pytest.mark.parametrize("progress", [True, False])
def test_embedding_detector_has_its_own_bar(progress: bool,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    pairs = planted_pairs(6, seed=3)
    n = len({t for p in pairs for t in (p.chosen, p.rejected)})  # each distinct text once
    NearDuplicateResponses(progress=progress, batch_size=4, device="cpu").detect(pairs)
    err = capsys.readouterr().err
    assert ("embedding" in err and f"{n}/{n}" in err) is progress, err


def test_the_embedding_bar_changes_no_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding, "_BATCHES_PER_BAR_STEP", 1)  # one encode call per batch
    pairs = planted_pairs(10, seed=4)  # 20 texts: five calls of 4
    detector = NearDuplicateResponses(progress=False, batch_size=4, device="cpu")
    texts = list(dict.fromkeys(t for p in pairs for t in (p.chosen, p.rejected)))
    one_call = _load_encoder(detector.model, detector.device).encode(
        texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=True)
    row = {t: i for i, t in enumerate(texts)}
    expected = [float(one_call[row[p.chosen]] @ one_call[row[p.rejected]]) for p in pairs]
    np.testing.assert_allclose(detector.cosine_similarities(pairs), expected, atol=1e-5)


def test_loading_the_encoder_logs_no_third_party_info(caplog: pytest.LogCaptureFixture) -> None:
    _load_encoder.cache_clear()  # a cached encoder would not load (or log) again
    with caplog.at_level(logging.INFO):  # what `rewardlab` sets up with basicConfig(level=INFO)
        _load_encoder("minilm", "cpu")
    noisy = [f"{r.name}: {r.getMessage()}" for r in caplog.records
             if r.levelno < logging.WARNING and not r.name.startswith("rewardlab")]
    assert noisy == []


def _option_helps(text: str) -> list[str]:
    """One whitespace-normalized entry per option of an argparse --help (wrapped lines joined)."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"^  -", line) or not entries:
            entries.append(line)
        else:
            entries[-1] += " " + line
    return [" ".join(e.split()) for e in entries]


@pytest.mark.parametrize("command", ["compare", "train"])
def test_help_states_each_default_once(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    helps = _option_helps(capsys.readouterr().out)
    assert any(h.startswith("--epochs") for h in helps)
    for h in helps:
        assert "(default: None)" not in h, h
        assert len(re.findall(r"\bdefault\b|\(preset\b", h, flags=re.IGNORECASE)) <= 1, h
