"""--max-steps on rated data: the run stops after that many steps, its schedule still spanning all
epochs, and leaves no checkpoint behind (a rated run cannot resume); --save-steps stays refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardlab.data.synthetic import read_synthetic_rated
from rewardlab.errors import ModelError
from rewardlab.training.grouped import train_on_rated
from rewardlab.training.train_config import TrainConfig


def _config(**overrides: object) -> TrainConfig:
    return TrainConfig(model="bow", precision="fp32", seed=0, max_length=64, batch_size=4,
                       epochs=2, logging_steps=1, **overrides)  # type: ignore[arg-type]


def test_max_steps_stops_a_rated_run_early(tmp_path: Path) -> None:
    prompts = read_synthetic_rated("synthetic:n=24,k=4,ties=0.2,seed=0", split="train").prompts
    whole = train_on_rated(prompts, config=_config(), progress=False)
    cut = train_on_rated(prompts, config=_config(max_steps=3, ties="model"),
                         output_dir=tmp_path, progress=False)
    assert (whole.steps, cut.steps) == (12, 3) and whole.complete and not cut.complete
    assert [h["step"] for h in cut.history] == [1, 2, 3]
    # the schedule spans all 12 steps: after 3 of them the rate has not decayed to 0
    assert cut.history[-1]["lr"] > 0 and cut.tie_parameter is not None
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "rewardlab.json").exists()


def test_save_steps_is_still_refused_on_rated_data() -> None:
    prompts = read_synthetic_rated("synthetic:n=4,k=4,seed=0", split="train").prompts
    with pytest.raises(ModelError, match="--save-steps are not supported on rated data"):
        train_on_rated(prompts, config=_config(save_steps=2), progress=False)
