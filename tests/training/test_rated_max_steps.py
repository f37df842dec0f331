"""Checkpoints on rated data: --max-steps stops a run early (its schedule still spanning all
epochs) and keeps a checkpoint; --save-steps saves them; --resume continues one to the very run an
uninterrupted one is, the tie parameter included, and returns a finished run as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rewardlab.data.synthetic import read_synthetic_rated
from rewardlab.errors import ModelError
from rewardlab.training import grouped
from rewardlab.training.grouped import RatedTrainResult, train_on_rated
from rewardlab.training.train_config import TrainConfig

SPEC = "synthetic:n=24,k=4,ties=0.2,seed=0"  # 24 prompts, batch 4, 2 epochs: 12 steps


def _config(**overrides: object) -> TrainConfig:
    return TrainConfig(model="bow", precision="fp32", seed=0, max_length=64, batch_size=4,
                       epochs=2, logging_steps=1, **overrides)  # type: ignore[arg-type]


def _prompts() -> list[Any]:
    return read_synthetic_rated(SPEC, split="train").prompts


def _weights(result: RatedTrainResult) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.model.model.state_dict().items()}


def test_max_steps_stops_a_rated_run_early_and_keeps_its_checkpoint(tmp_path: Path) -> None:
    prompts = _prompts()
    whole = train_on_rated(prompts, config=_config(), progress=False)
    cut = train_on_rated(prompts, config=_config(max_steps=3, ties="model"),
                         output_dir=tmp_path, progress=False)
    assert (whole.steps, cut.steps) == (12, 3) and whole.complete and not cut.complete
    assert [h["step"] for h in cut.history] == [1, 2, 3]
    # the schedule spans all 12 steps: after 3 of them the rate has not decayed to 0
    assert cut.history[-1]["lr"] > 0 and cut.tie_parameter is not None
    [ckpt] = (tmp_path / "checkpoints").iterdir()
    assert ckpt.name == "step-0000003"
    assert json.loads((tmp_path / "rewardlab.json").read_text())["complete"] is False


@pytest.mark.parametrize("ties", ["model", "drop"])
def test_a_resumed_rated_run_is_the_uninterrupted_one(tmp_path: Path, ties: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = _prompts()
    steps_taken: list[int] = []
    step = grouped._rated_step

    def counted(run: Any, plan_step: Any) -> Any:
        steps_taken.append(1)
        return step(run, plan_step)

    monkeypatch.setattr(grouped, "_rated_step", counted)
    whole = train_on_rated(prompts, config=_config(ties=ties), output_dir=tmp_path / "whole",
                           progress=False)
    out = tmp_path / "cut"
    first = train_on_rated(prompts, config=_config(ties=ties, max_steps=5, save_steps=2),
                           output_dir=out, progress=False)
    assert first.steps == 5 and not first.complete
    steps_taken.clear()
    resumed = train_on_rated(prompts, config=_config(ties=ties, save_steps=2), output_dir=out,
                             resume=True, progress=False)
    assert len(steps_taken) == 12 - 5  # from the stop's checkpoint on, not from the start
    assert resumed.complete and resumed.steps == whole.steps == 12
    assert [h["step"] for h in resumed.history] == [h["step"] for h in whole.history]
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in whole.history], abs=1e-6)
    assert resumed.train_loss == pytest.approx(whole.train_loss, abs=1e-6)
    assert (resumed.n_ties, resumed.n_prompts) == (whole.n_ties, whole.n_prompts)
    if ties == "model":  # the tie parameter went on from where it stopped, not from its start
        assert resumed.tie_parameter == pytest.approx(whole.tie_parameter, rel=1e-6)
        assert first.tie_parameter != pytest.approx(whole.tie_parameter, rel=1e-3)
    else:
        assert resumed.tie_parameter is whole.tie_parameter is None
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (out / "checkpoints").exists()  # finished: the states are cleared
    # a finished run found on --resume is returned as it is, without training again
    steps_taken.clear()
    again = train_on_rated(prompts, config=_config(ties=ties), output_dir=out, resume=True,
                           progress=False)
    assert steps_taken == []
    assert (again.seconds, again.steps, again.train_loss) == (0.0, 12, resumed.train_loss)
    assert again.tie_parameter == resumed.tie_parameter and again.n_ties == resumed.n_ties


def test_a_checkpoint_without_its_tie_parameter_is_refused(tmp_path: Path) -> None:
    prompts = _prompts()
    train_on_rated(prompts, config=_config(ties="model", max_steps=2), output_dir=tmp_path,
                   progress=False)
    [ckpt] = (tmp_path / "checkpoints").iterdir()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    del state["extra"]
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ModelError, match=r"cannot resume from .*trainer_state\.json: it holds no "
                                         r"davidson tie parameter"):
        train_on_rated(prompts, config=_config(ties="model"), output_dir=tmp_path, resume=True,
                       progress=False)


def test_train_resumes_a_rated_run_from_the_cli(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from rewardlab.cli.main import main

    db, out = f"sqlite:///{tmp_path}/rated.db", tmp_path / "m"
    assert main(["ingest", SPEC, "--name", "syn", "--db", db]) == 0
    train = ["train", "syn", "-o", str(out), "--model", "bow", "--precision", "fp32",
             "--batch-size", "4", "--epochs", "2", "--ties", "model", "--db", db, "--json"]
    capsys.readouterr()
    assert main([*train, "--max-steps", "3"]) == 0
    stopped = json.loads(capsys.readouterr().out)
    assert json.loads((out / "rewardlab.json").read_text())["steps"] == 3
    assert main([*train, "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    info = json.loads((out / "rewardlab.json").read_text())
    assert (info["steps"], info["total_steps"], info["complete"]) == (12, 12, True)
    assert resumed["tie_parameter"] == info["ties"]["parameter"] != stopped["tie_parameter"]
    # found finished: nothing trained, the run's own rate (its steps over their time), not ∞
    assert main([*train, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["pairs_per_second"] == resumed["pairs_per_second"] > 0
    assert again["tie_parameter"] == resumed["tie_parameter"]
    # another tie handling is another run: refused in one line, nothing changed
    assert main([*train[:-3], "--ties", "soft", "--db", db, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "it was trained with ties='model', not 'soft'" in err and len(err.splitlines()) == 1
