"""One run of a plan, trained and evaluated: in this process, or as one accelerate job of G
processes (`compare --gpus-per-run G`, G > 1).

`train_and_evaluate(run, test, checkpoint=..., progress=...)` trains a RunSpec's selection here and
evaluates the model on the test pairs: the run's record. A run on G GPUs is what `rewardlab train`
is under a launcher (docs/distributed.md): `launch_run(run, test, processes=G, ...)` writes the run
(a rated run with its prompts) and the test pairs (and prompts) as JSON (never pickle) into a
temporary folder and starts

    python -m accelerate.commands.launch --multi_gpu --num_processes G --num_machines 1 \\
        --main_process_port PORT -m rewardlab.experiment.run_job SPEC.json

with the CUDA_VISIBLE_DEVICES it inherits: the run's G GPUs, as the executor's worker or Ray set
them. The G processes share each optimizer step's micro-batches: each takes `grad_accum / G` of
them (`--batch-size` pairs each), so the job takes the very steps of the one-process run with the
run's `grad_accum` (docs/distributed.md: the same global batch, the same cut of the pairs into
steps; only float rounding differs), and the run keeps its id. The main process evaluates on the
test pairs and writes the record as JSON, which `launch_run` reads back: the same RunRecord as a
run trained here. A job that fails leaves no record: `launch_run`
raises one line, the first failed process's error (a RewardlabError when the input is at fault,
which the executor does not try again). `cpu=True` launches the same job as G CPU processes over
gloo (`--cpu`): how the tests run it on a machine without GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.rated import RatedPrompt
from rewardlab.errors import RewardlabError
from rewardlab.experiment.executor import one_line
from rewardlab.experiment.plan import RunSpec
from rewardlab.flags.selection import Selection
from rewardlab.jsonable import to_jsonable
from rewardlab.training.train_config import TrainConfig

if TYPE_CHECKING:
    from rewardlab.report.results import RunRecord
    from rewardlab.training.loop import TrainResult

__all__ = ["train_and_evaluate", "selection_fields", "launch_run", "main", "SPEC_FILE",
           "RECORD_FILE"]

log = logging.getLogger("rewardlab")
SPEC_FILE, RECORD_FILE, LOG_FILE = "spec.json", "record.json", "job.log"
# the variables a launcher sets in the processes it starts: a job inherits none from its parent
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE")
_LAUNCH_PREFIXES = ("ACCELERATE_", "MASTER_", "TORCHELASTIC_", "FSDP_")


# ---------------------------------------------------------------- one run, in this process

def selection_fields(run: RunSpec, ckpt: Path | None) -> dict[str, Any]:
    """The record's fields that describe the run's selection, not its training: taken from the
    plan, also for a reused run (an unfiltered run is the same run whatever the detectors flag,
    but its record counts this experiment's flags)."""
    selection = run.selection
    return {"seed": run.seed, "train_pairs": len(selection.pairs),
            "selection": _rated_description(run) if run.prompt_ids is not None
            else selection.describe(), "flagged_in_train": selection.n_flagged,
            "removed": selection.n_removed, "checkpoint": str(ckpt) if ckpt else None}


def _rated_description(run: RunSpec) -> str:
    """A rated run's training data in one line: prompts, pairs, how ties and rankings are used."""
    config = run.train_config
    ties = {"drop": "dropped", "soft": "soft targets 1/2", "model": "modelled (Davidson)"}
    use = ("the Plackett-Luce likelihood of each ranking" if config.ranking == "listwise" else
           f"{len(run.pair_ids)} decided pairs, ties {ties.get(config.ties, config.ties)}")
    cut = bool(run.prompts) and "cut_from" in run.prompts[0].meta  # plan.best_worst
    return f"{'best vs worst response of ' if cut else ''}{len(run.prompts)} rated prompts: {use}"


def _train(run: RunSpec, config: TrainConfig, ckpt: Path | None, progress: bool) -> TrainResult:
    from rewardlab.training.loop import train_reward_model

    if run.prompt_ids is not None:  # a tie or ranking condition: K responses a prompt
        from rewardlab.training.grouped import train_on_rated

        return train_on_rated(run.prompts, config=config, output_dir=ckpt, progress=progress)
    selection = run.selection
    return train_reward_model(selection.pairs, config=config, output_dir=ckpt,
                              smoothing=selection.smoothing, progress=progress)


def _rated_fields(trained: TrainResult, test_rated: Sequence[RatedPrompt],
                  progress: bool) -> dict[str, Any]:
    """A rated run's record block: what it trained on (prompts, ties, the tie parameter) and its
    rated metrics on the test prompts, as `evaluate_rated` gives them and per prompt (the unit of
    compare's rated comparisons, `evaluation/rated_stats.py`)."""
    from rewardlab.evaluation.rated import evaluate_rated, rated_rewards
    from rewardlab.evaluation.rated_stats import prompt_values
    from rewardlab.training.ties import tie_model_of

    model = trained.model
    rewards = rated_rewards(model, test_rated, progress=progress)  # scored once, for both below
    return {"train_prompts": getattr(trained, "n_prompts", None),
            "train_ties": getattr(trained, "n_ties", None),
            "tie_parameter": getattr(trained, "tie_parameter", None),
            "test": evaluate_rated(model, test_rated, rewards=rewards),
            "per_prompt": prompt_values(rewards, test_rated, tie_model_of(model.info))}


def train_and_evaluate(run: RunSpec, test: Sequence[PreferencePair], *, checkpoint: Path | None,
                       progress: bool, config: TrainConfig | None = None,
                       test_rated: Sequence[RatedPrompt] = ()) -> RunRecord:
    """Train on the run's selection, evaluate on `test`: its record. `config`: what this process
    trains with when not the run's own TrainConfig (a launched job's process: its share of each
    step's micro-batches). A run on rated prompts (`run.prompt_ids`) trains with `train_on_rated`
    and also records its rated metrics on `test_rated` (`rated`)."""
    from rewardlab.evaluation.evaluate import evaluate_reward_model
    from rewardlab.training.memory import allocator, measured_run

    # the model and the evaluation's buffers are dropped inside the block, so what the run leaves
    # is given back before the next run (measured_run releases it; its record says how much stayed)
    with measured_run() as memory:
        trained = _train(run, config or run.train_config, checkpoint, progress)
        evaluation = evaluate_reward_model(trained.model, test, progress=progress)
        fields = selection_fields(run, checkpoint)
        record = {
            **{k: fields[k] for k in ("seed", "train_pairs", "selection", "flagged_in_train",
                                      "removed")},
            "train_loss": trained.train_loss, "train_accuracy": trained.train_accuracy,
            "seconds": trained.seconds, "checkpoint": fields["checkpoint"],
            "n_truncated": trained.n_truncated, "history": trained.history,
            "test": evaluation.metrics,
            "test_chosen_rewards": evaluation.chosen_rewards.tolist(),
            "test_rejected_rewards": evaluation.rejected_rewards.tolist(),
        }
        if run.prompt_ids is not None and test_rated:
            record["rated"] = _rated_fields(trained, test_rated, progress)
        del trained, evaluation
    record.update(peak_rss_mb=round(memory.peak_mb, 1), rss_after_mb=round(memory.after_mb, 1),
                  allocator=allocator())
    log.info("    memory: peak RSS %.0f MB%s, %.0f MB after the run (allocator: %s)", memory.peak_mb,
             "" if memory.per_run_peak else " (the process's so far)", memory.after_mb,
             record["allocator"])
    # as the store hands it back (NaN → None, tuples → lists): fresh and reused runs read alike
    return cast("RunRecord", to_jsonable(record))


# ---------------------------------------------------------------- the run as JSON

def _pair_json(pair: PreferencePair) -> dict[str, Any]:
    return {f.name: getattr(pair, f.name) for f in dataclasses.fields(pair)}


def _rated_json(prompt: RatedPrompt) -> dict[str, Any]:
    return {f.name: getattr(prompt, f.name) for f in dataclasses.fields(prompt)}


def _rated_from(row: dict[str, Any]) -> RatedPrompt:
    """A RatedPrompt from `_rated_json` (JSON gives lists where it holds tuples)."""
    return RatedPrompt(**{**row, "responses": tuple(row["responses"]),
                          "scores": tuple(row["scores"]), "ranks": tuple(row["ranks"]),
                          "ties": tuple(tuple(t) for t in row["ties"])})


def _spec_json(run: RunSpec, test: Sequence[PreferencePair], checkpoint: Path | None,
               processes: int, test_rated: Sequence[RatedPrompt] = ()) -> dict[str, Any]:
    """The run (every field its id hashes, its selection's pairs, a rated run's prompts), the test
    pairs and prompts, where its checkpoint goes and how many processes share it."""
    named = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.compare}
    named["train_config"] = dataclasses.asdict(run.train_config)
    selection = {f.name: getattr(run.selection, f.name) for f in dataclasses.fields(Selection)}
    selection["pairs"] = [_pair_json(p) for p in run.selection.pairs]
    return {"id": run.id, "processes": processes,
            "checkpoint": str(checkpoint) if checkpoint is not None else None,
            "run": named, "selection": selection, "test": [_pair_json(p) for p in test],
            "prompts": [_rated_json(p) for p in run.prompts],
            "test_rated": [_rated_json(p) for p in test_rated]}


def _run_from(spec: dict[str, Any]) -> RunSpec:
    """The RunSpec `_spec_json` wrote, checked by its id (a field lost on the way changes it) and,
    for a rated run, by its prompts' store ids."""
    named = dict(spec["run"])
    for name in ("pair_ids", "flipped_ids", "smoothing", "prompt_ids"):
        named[name] = tuple(named[name]) if named.get(name) is not None else None
    named["train_config"] = TrainConfig(**named["train_config"])
    selection = {**spec["selection"],
                 "pairs": [PreferencePair(**p) for p in spec["selection"]["pairs"]]}
    prompts = tuple(_rated_from(p) for p in spec.get("prompts", []))
    run = RunSpec(**named, selection=Selection(**selection), prompts=prompts)
    if run.id != spec["id"]:
        raise RuntimeError(f"the run's spec did not come back whole from JSON (id {run.id[:12]} "
                           f"instead of {spec['id'][:12]})")
    return run


# ---------------------------------------------------------------- the launching side

def _check_split(grad_accum: int, processes: int) -> None:
    if processes < 1 or grad_accum % processes:
        raise RewardlabError(f"a run of {processes} processes shares each step's --grad-accum "
                             f"{grad_accum} micro-batches between them: give a --grad-accum "
                             f"divisible by {processes}")


def _check_gpus(processes: int) -> None:
    import torch

    shown = torch.cuda.device_count()
    if shown < processes:
        raise RewardlabError(f"a run of {processes} processes needs {processes} GPUs; this "
                             f"process sees {shown} (CUDA_VISIBLE_DEVICES="
                             f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")


def _free_port() -> int:
    """A loopback port free now, for the job's rendezvous (each job its own)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(spec: Path, processes: int, cpu: bool) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--cpu" if cpu else "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", "rewardlab.experiment.run_job",
            str(spec)]


def _environment(processes: int, folder: Path) -> dict[str, str]:
    """This environment without any launcher's variables (the job is a launch of its own), the
    threads this process has split between the job's processes, and the job's folder as its
    TMPDIR (torchrun's own files go there, and away with it)."""
    import torch

    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCH_VARS and not k.startswith(_LAUNCH_PREFIXES)}
    env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // processes))
    env["TMPDIR"] = str(folder)
    return env


def _with_parent() -> Callable[[], None] | None:
    """On Linux, what makes the launcher get SIGTERM when the thread that started it dies
    (PR_SET_PDEATHSIG; SIGKILL and the executor's terminate included): the launcher then stops
    the job's processes, so no orphaned job keeps the run's GPUs while the run is tried again.
    prctl is looked up here: between fork and exec the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG


def _run_job(command: list[str], env: dict[str, str], folder: Path) -> int:
    """The job's exit status, its output in folder/job.log. Interrupted here (Ctrl-C): SIGTERM to
    the launcher, which stops the processes it started, then SIGKILL to its group if it lingers."""
    with (folder / LOG_FILE).open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_with_parent())  # only prctl runs there (see above)
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=60)  # accelerate and torchrun stop their processes on SIGTERM
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise


def launch_run(run: RunSpec, test: Sequence[PreferencePair], *, checkpoint: Path | None,
               processes: int, cpu: bool = False,
               test_rated: Sequence[RatedPrompt] = ()) -> RunRecord:
    """Train `run` as one job of `processes` processes and evaluate it: its record, as
    `train_and_evaluate` gives it in one process.

    `cpu`: the processes run on the CPU over gloo (`accelerate launch --cpu`); else one per GPU
    (`--multi_gpu`) on the GPUs CUDA_VISIBLE_DEVICES shows this process. The run's `grad_accum`
    micro-batches of each step must split evenly between the processes. A failed job raises one
    line: a RewardlabError when a process refused the input (a missing model, …), else a
    RuntimeError; it leaves no record and stores nothing. `test_rated`: a rated run's test prompts
    (its rated metrics), as `train_and_evaluate` takes them.
    """
    _check_split(run.train_config.grad_accum, processes)
    if not cpu:
        _check_gpus(processes)
    with tempfile.TemporaryDirectory(prefix="rewardlab-run-") as tmp:
        folder = Path(tmp)
        spec = folder / SPEC_FILE
        spec.write_text(json.dumps(_spec_json(run, test, checkpoint, processes, test_rated)),
                        encoding="utf-8")
        code = _run_job(_command(spec, processes, cpu), _environment(processes, folder), folder)
        return _read_back(folder, code, processes)


def _read_back(folder: Path, code: int, processes: int) -> RunRecord:
    """The record the main process wrote, when the job succeeded; else the first failure."""
    record = folder / RECORD_FILE
    if code == 0 and record.is_file():
        return cast("RunRecord", json.loads(record.read_text(encoding="utf-8")))
    failure = _first_failure(folder)
    if failure is not None and failure["refused"]:
        raise RewardlabError(failure["message"])
    what = (f"rank {failure['rank']}: {failure['line']}" if failure is not None
            else _last_line(folder / LOG_FILE) if code != 0 else "it wrote no record")
    raise RuntimeError(f"the run's job of {processes} processes failed (exit status {code}): "
                       f"{what}")


def _first_failure(folder: Path) -> dict[str, Any] | None:
    """The error the first failed process wrote (the others often fail only because it did)."""
    found = sorted(folder.glob("error-rank*.json"), key=lambda p: p.stat().st_mtime_ns)
    return cast("dict[str, Any]", json.loads(found[0].read_text(encoding="utf-8"))) if found else None


def _last_line(path: Path) -> str:
    """The job's last line of output: why, when no process could say (killed, out of memory)."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else "no output"


# ---------------------------------------------------------------- the job's processes

def _train_share(spec_path: Path, rank: int) -> None:
    """This process's part of the run: its share of every step; the main process also evaluates
    and writes the record (to a temporary name first: a record is there whole or not at all)."""
    from accelerate.utils import get_cpu_distributed_information

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    run, processes = _run_from(spec), int(spec["processes"])
    world = int(get_cpu_distributed_information().world_size)
    if world != processes:  # e.g. a CPU launch that started one process instead of N
        raise RuntimeError(f"the job has {world} processes instead of {processes}")
    config = dataclasses.replace(run.train_config,
                                 grad_accum=run.train_config.grad_accum // processes)
    checkpoint = Path(spec["checkpoint"]) if spec["checkpoint"] is not None else None
    if rank != 0:
        _train(run, config, checkpoint, False)
        return
    test = [PreferencePair(**p) for p in spec["test"]]
    test_rated = [_rated_from(p) for p in spec.get("test_rated", [])]
    record = train_and_evaluate(run, test, checkpoint=checkpoint, progress=False, config=config,
                                test_rated=test_rated)
    partial = spec_path.parent / f"{RECORD_FILE}.part"
    partial.write_text(json.dumps(record), encoding="utf-8")
    partial.replace(spec_path.parent / RECORD_FILE)


def _write_failure(folder: Path, rank: int, error: Exception) -> None:
    first = (str(error).strip().splitlines() or [""])[0]
    failure = {"rank": rank, "refused": isinstance(error, RewardlabError), "message": first,
               "line": one_line(error)}
    (folder / f"error-rank{rank}.json").write_text(json.dumps(failure), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """A process of the job: `python -m rewardlab.experiment.run_job SPEC.json`, started by
    `accelerate launch` (`launch_run`). Exit status 0, or 1 after writing why to
    error-rankR.json next to the spec."""
    from rewardlab.training.runtime import launch_cpu_processes, process_rank

    args = list(sys.argv[1:] if argv is None else argv)
    launched = launch_cpu_processes(args)  # `--cpu`: this process starts the job's N processes
    if launched is not None:
        return launched
    rank, spec = process_rank(), Path(args[0])
    try:
        _train_share(spec, rank)
    except Exception as e:  # noqa: BLE001 - said in one line to the process that launched the job
        _write_failure(spec.parent, rank, e)
        sys.stderr.write(f"rewardlab run job: rank {rank}: {one_line(e)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
