"""A run on several GPUs (`compare --gpus-per-run G`, G > 1) is one accelerate job of G processes
(experiment/run_job.py). Here, without a GPU, the same job runs as 2 CPU processes over gloo
(`accelerate launch --cpu --num_processes 2`) through the worker's own code path (`train_run`):

- its record comes back with the one-process record's shape and numbers. The 2 processes share
  each step's `grad_accum` 2 micro-batches, so they take the one-process run's very steps (the same
  global batch, the same cut of the pairs into steps, docs/distributed.md); what may differ is float
  rounding (the two gradients are summed by gloo, not in one buffer). docs/distributed.md promises
  the first three losses to 1e-5 and the whole curve to 2e-2 for a tiny BERT; this `bow` run was
  measured bit for bit equal, and is held to 1e-5 (losses, rewards, NLL) and the same accuracy;
- a job that fails comes back as one line through the executor, which tries it again unless the
  input is at fault (a model that does not exist), and leaves nothing: no stored run, no record,
  no temporary folder;
- what the machine cannot run (0 GPUs here, `--gpus-per-run 2`) is refused before any work
  (tests/experiment/test_fanout.py, with the other refusals).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.sources import read_source
from rewardlab.errors import RewardlabError
from rewardlab.experiment.compare_config import CompareConfig, Condition
from rewardlab.experiment.executor import Execution, check_execution, execute
from rewardlab.experiment.plan import ExperimentData, RunSpec, plan_experiment
from rewardlab.experiment.run_job import train_and_evaluate
from rewardlab.experiment.runs import RunTask, train_run
from rewardlab.models.reward_model import INFO_FILE
from rewardlab.store.store import Store
from rewardlab.training.train_config import TrainConfig

# what measures the process, not the run: how long, its memory, where its checkpoint went
PROCESS_KEYS = ("seconds", "peak_rss_mb", "rss_after_mb", "allocator", "checkpoint")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, RunSpec, list[PreferencePair]]:
    """(store URL, the unfiltered run of a tiny `bow` experiment, its test pairs): 160 train pairs
    (53 test pairs), batch 4 × grad_accum 2, 2 epochs, a loss in the history at every step."""
    url = f"sqlite:///{tmp_path_factory.mktemp('multi-gpu-run')}/store.db"
    with Store(url) as store:
        store.ingest("syn", read_source("synthetic:n=160,noise=0.2,seed=0", test_fraction=0.25))
        train, test = store.load_pairs("syn", split="train"), store.load_pairs("syn", split="test")
    data = ExperimentData(pool=train, fingerprint="f", seeds=[0],
                          conditions=[Condition("unfiltered", "all", None)])
    training = TrainConfig(model="bow", precision="fp32", batch_size=4, grad_accum=2, epochs=2,
                           logging_steps=1)
    [run] = plan_experiment(CompareConfig(training=training), data)
    return url, run, test


def _losses(record: Any) -> list[float]:
    return [h["loss"] for h in record["history"]]


def test_a_run_of_two_cpu_processes_gives_the_one_process_record(
        experiment: tuple[str, RunSpec, list[PreferencePair]], tmp_path: Path) -> None:
    _, run, test = experiment
    one = train_and_evaluate(run, test, checkpoint=None, progress=False)
    assert not torch.cuda.is_available()  # so the job's 2 processes are CPU processes
    two = train_run(RunTask(run, tmp_path / "ckpt", "syn", processes=2), test)

    assert list(two) == list(one)  # the same record, key for key, in the same order
    for key in set(one) - {"history", "test", "test_chosen_rewards", "test_rejected_rewards",
                           "train_loss", "train_accuracy", *PROCESS_KEYS}:
        assert two[key] == one[key], key  # type: ignore[literal-required]
    assert [h["step"] for h in two["history"]] == [h["step"] for h in one["history"]]
    assert len(_losses(one)) == 40  # 2 epochs × 160 pairs / 8 per step (2 micro-batches of 4)
    assert _losses(two) == pytest.approx(_losses(one), abs=1e-5)
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
    assert two["train_accuracy"] == pytest.approx(one["train_accuracy"], abs=1e-5)
    for side in ("test_chosen_rewards", "test_rejected_rewards"):
        assert two[side] == pytest.approx(one[side], abs=1e-5)
    assert (two["test"]["n"], two["test"]["accuracy"]) == (one["test"]["n"], one["test"]["accuracy"])
    assert two["test"]["nll"] == pytest.approx(one["test"]["nll"], abs=1e-5)
    # it really was 2 processes, each with 1 micro-batch of each step: the job's checkpoint says so
    info = json.loads((tmp_path / "ckpt" / INFO_FILE).read_text())
    assert info["num_processes"] == 2 and info["config"]["grad_accum"] == 1
    assert two["checkpoint"] == str(tmp_path / "ckpt")


@pytest.mark.parametrize("fault, tries, says", [
    # the input at fault (every process refuses it): not tried again, its message as it is
    ("model", 1, "unknown backbone '{path}'"),
    # anything else (here the main process cannot make its checkpoint folder): tried again
    ("checkpoint", 2, "RuntimeError: the run's job of 2 processes failed (exit status 1): rank 0: "
                      "FileExistsError: [Errno 17] File exists: '{path}'"),
])
def test_a_failed_job_is_one_line_retried_as_any_run_and_leaves_nothing(
        experiment: tuple[str, RunSpec, list[PreferencePair]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, fault: str, tries: int, says: str) -> None:
    url, run, test = experiment
    path, checkpoint = tmp_path / "not-a-folder", None
    if fault == "model":
        run = dataclasses.replace(run, train_config=dataclasses.replace(run.train_config,
                                                                        model=str(path)))
    else:
        path.write_text("a file where the checkpoint folder would go\n")
        checkpoint = path
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the worker's job folders go here
    # a worker process launches the job and would store the run itself (as a Ray task does)
    task = RunTask(run, checkpoint, "syn", store_url=url, processes=2)
    [done] = execute(train_run, [task], shared=test, execution=Execution(workers=2, retries=1))
    assert (done.result, done.attempts) == (None, tries)
    assert done.error is not None and len(done.error.splitlines()) == 1
    assert done.error.startswith(says.format(path=path)), done.error
    with Store(url) as store:
        assert store.trained_run_keys("syn") == []
    assert list(temp.iterdir()) == []  # each try's job folder (spec, log, errors) is gone


def test_a_run_on_several_gpus_is_refused_where_cuda_shows_fewer() -> None:
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has 2 GPUs")
    execution = Execution(workers=1, gpus_per_run=2)
    assert not execution.in_process  # a worker launches the run's job, with the retries
    with pytest.raises(RewardlabError, match=r"^--workers 1 × --gpus-per-run 2 needs 2 GPUs; "
                                             r"this machine shows \d"):
        check_execution(execution, "sqlite:///unused.db")


def test_a_run_on_several_gpus_needs_its_micro_batches_to_split_evenly() -> None:
    with pytest.raises(RewardlabError, match="give a --grad-accum divisible by 2"):
        CompareConfig(gpus_per_run=2, training=TrainConfig(model="bow", grad_accum=3))
    assert CompareConfig(gpus_per_run=2, training=TrainConfig(model="bow", grad_accum=4))
