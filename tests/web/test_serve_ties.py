"""`rewardlab serve` with a tie model (issue 32): a tiny `bow` model trained with `--ties model` on
synthetic rated data answers /compare with p_win, p_tie, p_loss (summing to 1, P(tie) largest for
equal responses, the numbers of `rewardlab score --file`) and shows its tie model in /info; a model
without one answers as before; a malformed tie model is refused before serving."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rewardlab.cli.main import main
from rewardlab.data.rated import RatedPrompt
from rewardlab.data.synthetic import read_synthetic_rated
from rewardlab.errors import ModelError
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.grouped import train_on_rated
from rewardlab.training.train_config import TrainConfig
from rewardlab.web.serve import ServeConfig, create_serve_app
from rewardlab.web.server import background_server

HTTP = httpx.Client(timeout=60.0)
FP32 = ServeConfig(precision="fp32", max_wait_ms=0)  # rewards equal `score`'s (fp32) to rounding
PLAIN_FIELDS = {"chosen_rewards", "rejected_rewards", "p_chosen", "truncated"}


@pytest.fixture(scope="module")
def prompts() -> list[RatedPrompt]:
    return read_synthetic_rated("synthetic:n=48,k=4,ties=0.2,seed=0", split="train").prompts


@pytest.fixture(scope="module", params=["davidson", "rao-kupper"])
def tie_checkpoint(request: pytest.FixtureRequest, prompts: list[RatedPrompt],
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"ties-{request.param}")
    config = TrainConfig(model="bow", epochs=2, precision="fp32", ties="model",
                         tie_model=request.param, seed=0, max_length=64)
    train_on_rated(prompts, config=config, output_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def tie_server(tie_checkpoint: Path) -> Iterator[str]:
    app = create_serve_app(RewardModel.load(tie_checkpoint), FP32, model_dir=str(tie_checkpoint))
    with background_server(app) as url:
        yield url


def _rows(prompts: list[RatedPrompt]) -> list[dict[str, str]]:
    """Per prompt: response 0 against itself (equal) and against each other response, both ways."""
    rows = []
    for rated in prompts[:6]:
        first, *others = rated.responses
        rows.append({"prompt": rated.prompt_text, "chosen": first, "rejected": first})
        for other in others:
            rows.append({"prompt": rated.prompt_text, "chosen": first, "rejected": other})
            rows.append({"prompt": rated.prompt_text, "chosen": other, "rejected": first})
    return rows


def _compare(url: str, rows: list[dict[str, str]]) -> dict[str, list[float]]:
    body = {key: [r[key] for r in rows] for key in ("prompt", "chosen", "rejected")}
    reply = HTTP.post(f"{url}/compare", json=body)
    assert reply.status_code == 200, reply.text
    answer: dict[str, list[float]] = reply.json()
    return answer


def test_compare_gives_outcome_probabilities(tie_server: str, tie_checkpoint: Path,
                                             prompts: list[RatedPrompt]) -> None:
    rows = _rows(prompts)
    answer = _compare(tie_server, rows)
    assert set(answer) == PLAIN_FIELDS | {"p_win", "p_tie", "p_loss"}
    probs = np.array([answer["p_win"], answer["p_tie"], answer["p_loss"]]).T  # (N, 3)
    assert probs.shape == (len(rows), 3) and (probs > 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)

    ties = json.loads((tie_checkpoint / "rewardlab.json").read_text())["ties"]
    info = HTTP.get(f"{tie_server}/info").json()["model"]["ties"]
    assert (info["model"], info["parameter"]) == (ties["model"], pytest.approx(ties["parameter"]))
    assert info["p_tie_at_equal"] == pytest.approx(ties["p_tie_at_equal"], abs=1e-9)
    assert info["compare_fields"] == ["p_win", "p_tie", "p_loss"]

    equal = np.array([r["chosen"] == r["rejected"] for r in rows])
    # equal responses: equal rewards, the largest P(tie) there is, and win = loss
    assert probs[equal, 1] == pytest.approx(info["p_tie_at_equal"], abs=1e-6)
    assert probs[equal, 1].min() > probs[~equal, 1].max()
    np.testing.assert_allclose(probs[equal, 0], probs[equal, 2], atol=1e-6)
    # the better-rewarded side wins more often than it loses, and p_chosen is still plain BT
    gap = np.array(answer["chosen_rewards"]) - np.array(answer["rejected_rewards"])
    assert ((probs[:, 0] > probs[:, 2]) == (gap > 0))[~equal].all()
    np.testing.assert_allclose(answer["p_chosen"], 1 / (1 + np.exp(-gap)), atol=1e-9)


def test_compare_matches_score_file(tie_server: str, tie_checkpoint: Path,
                                    prompts: list[RatedPrompt], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(prompts)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    capsys.readouterr()
    assert main(["score", str(tie_checkpoint), "--file", str(path), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    answer = _compare(tie_server, rows)
    for key in ("p_win", "p_tie", "p_loss"):
        np.testing.assert_allclose(answer[key], [s[key] for s in scored], atol=1e-6)
    np.testing.assert_allclose(answer["chosen_rewards"], [s["chosen_reward"] for s in scored],
                               atol=1e-5)


def test_model_without_tie_model_answers_as_before(prompts: list[RatedPrompt]) -> None:
    rm = RewardModel(*load_backbone("bow", max_length=64, seed=0), max_length=64)
    with background_server(create_serve_app(rm, FP32, model_dir="bow")) as url:
        answer = _compare(url, _rows(prompts)[:3])
        info = HTTP.get(f"{url}/info").json()
    assert set(answer) == PLAIN_FIELDS
    assert "ties" not in info["model"]


def test_a_malformed_tie_model_is_refused_before_serving(tie_checkpoint: Path,
                                                          tmp_path: Path) -> None:
    broken = Path(shutil.copytree(tie_checkpoint, tmp_path / "broken"))
    meta = json.loads((broken / "rewardlab.json").read_text())
    meta["ties"]["parameter"] = "high"
    (broken / "rewardlab.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="ties"):
        create_serve_app(RewardModel.load(broken), FP32)
