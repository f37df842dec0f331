"""Multi-process training: one run of N processes, as `accelerate launch` and `torchrun` start it.

The end-to-end test launches real processes (gloo on the CPU) on a tiny BERT: 2 processes with
batch 4 must train like 1 process with batch 4 × grad_accum 2 (the same global batch of 8 pairs,
the same steps). Not bit for bit: the two processes each sum their gradient and gloo averages the
two, where one process sums all of them in one buffer, so float32 rounding differs (~1e-7
relative per step), and Adam's steps grow it: measured, the first three losses agree to 1e-9, the
whole curve to 2.6e-3 and the reward margins to 1% — as far as one process with 1 or with 2
threads is from itself. So the first steps are held tight (another cut of the pairs into steps
moves the first loss by 6e-2) and the rest loosely. The tiny BERT has a wide init (0.2): at BERT's
0.02 every first step sits at loss ln 2 whatever it holds, and rounding alone decides when
training leaves that plateau.

The launches run with the stages on (REWARDLAB_STAGES=1) and no deadline for the whole launch:
on a loaded 2-core machine they are slow (measured at load ~8: 108 s for the first launch, 60 s
of it importing torch and transformers in the launcher), which must not fail the test. A hang
must: a launch silent for STALL_S seconds is killed with all its processes, and the failure names
the last stage each process reached. They also inherit a hostile OMP_NUM_THREADS (twice the
cores): the launcher and the runtime, not this test, give each process its share of the cores.

The unit tests below check, in this process, the pieces the launch relies on: each process's
disjoint share of every step, accelerate's launch arguments read back, DeepSpeed's "auto" values,
the refusals of what a sharded (FSDP/DeepSpeed) run cannot do, and the thread share per process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from accelerate.utils import DeepSpeedPlugin, DistributedType

from rewardlab.data.source_result import SourceResult
from rewardlab.data.sources import read_source
from rewardlab.errors import ModelError
from rewardlab.models.kernels import compiled_kernels
from rewardlab.models.reward_model import INFO_FILE, RewardModel
from rewardlab.store.store import Store
from rewardlab.training.checkpoint import CHECKPOINTS, gather_model
from rewardlab.training.grouped import train_on_rated
from rewardlab.training.loop import _plan, train_reward_model
from rewardlab.training.runtime import (
    check_launch,
    fit_deepspeed,
    make_accelerator,
    process_rank,
    split_cpu_launch,
    thread_share,
    threads_for,
)
from rewardlab.training.train_config import TrainConfig
from tests._tiny import make_tiny_backbone, planted_pairs

BIN = Path(sys.executable).parent
# the run both launches continue: 44 pairs, 11 batches of 4 per epoch, 2 epochs; each epoch's
# last step has one batch, so the second process repeats one with weight 0 (lockstep)
TRAIN = ["--lr", "1e-2", "--max-length", "64", "--batch-size", "4", "--epochs", "2",
         "--logging-steps", "1", "--seed", "42"]
STEPS = 12  # 2 epochs × ⌈11 batches / (2 processes × 1 micro-batch)⌉


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment() -> dict[str, str]:
    """This environment without any launcher's variables, offline, the stages on, and twice as
    many threads per process as the machine has cores (as a CI image exporting its core count)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACCELERATE_", "FSDP_", "MASTER_", "LOCAL_", "TORCHELASTIC"))
           and k not in ("RANK", "WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")}
    return {**env, "OMP_NUM_THREADS": str(2 * thread_share(1)), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "REWARDLAB_STAGES": "1"}


STALL_S = 240  # the longest gap between two lines a launch may print (measured ≤ 60 s at load 8)
STAGE = re.compile(r"^rewardlab stage: rank (\d+): (.*)$")


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, list[str]]:
    """Run `command` to its end, however slow, but kill it (and every process it started) once it
    has printed nothing for STALL_S seconds; the exit code, stdout and the stderr lines."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    alive = [time.monotonic()]

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            alive[0] = time.monotonic()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    out: list[str] = []
    collector = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else ""),
                                 daemon=True)
    collector.start()
    while proc.poll() is None:
        if time.monotonic() - alive[0] > STALL_S:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the processes it started
            proc.wait()
            stages = _last_stages(lines) or {"-": "none printed: still starting up (imports)"}
            pytest.fail(f"hung: nothing printed for {STALL_S} s; last stage per rank: {stages}; "
                        "last lines:\n" + "\n".join(lines[-15:]))
        time.sleep(0.5)
    reader.join()
    collector.join()
    return proc.returncode, "".join(out), lines


def _last_stages(lines: list[str]) -> dict[str, str]:
    return {m[1]: m[2] for m in map(STAGE.match, lines) if m}


def _launch(command: list[str], cwd: Path) -> tuple[dict[str, Any], list[str]]:
    """Run a launch; it must succeed and print exactly one JSON document on stdout. The document
    and the stages the processes printed, in order."""
    code, stdout, lines = _run(command, cwd, _environment())
    assert code == 0, "\n".join(lines[-40:])
    document: dict[str, Any] = json.loads(stdout)  # two documents would be "Extra data"
    assert stdout.count('"output_dir"') == 1
    stages = [f"rank {m[1]}: {m[2]}" for m in map(STAGE.match, lines) if m]
    # every process joined with its share of the cores, not the 2 × cores it inherited, and
    # trained to the end
    share = thread_share(2)
    for rank in (0, 1):
        assert any(re.fullmatch(rf"rank {rank}: rendezvous: joined as rank {rank} of 2, "
                                rf"{share} thread\(s\)", s) for s in stages), stages
        assert f"rank {rank}: training steps done" in stages, stages
    return document, stages


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("distributed")
    url = f"sqlite:///{root / 'store.db'}"
    pairs = planted_pairs(44, seed=0)
    Store(url).ingest("planted", SourceResult(spec="planted", pairs=pairs, read=len(pairs),
                                              rejected=[]))
    with torch.random.fork_rng():  # the same tiny BERT every session: how fast it learns
        torch.manual_seed(0)        # depends on its random init
        backbone = str(make_tiny_backbone(root / "tiny", initializer_range=0.2))
    # built (or loaded) here, once: a build inside a launch is minutes of silence under load
    compiled_kernels()
    yield SimpleNamespace(root=root, url=url, backbone=backbone,
                          pairs=Store(url).load_pairs("planted", split="train"))


def test_two_processes_train_like_one_with_the_same_global_batch(workspace: SimpleNamespace
                                                                 ) -> None:
    w, out = workspace, workspace.root / "two"
    common = ["-m", "rewardlab", "train", "planted", "-o", str(out), "--model", w.backbone,
              "--db", w.url, "--json", *TRAIN]
    # 1) accelerate's CPU launch, stopped after 5 steps: one checkpoint, written once
    first, stages = _launch([str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "2",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
                             "no", "--main_process_port", str(_free_port()), *common,
                             "--max-steps", "5"], w.root)
    # accelerate's launcher capped the inherited thread count before starting the processes
    assert stages[0] == f"rank 0: launcher: starting 2 processes, OMP_NUM_THREADS={thread_share(2)}"
    assert first["num_processes"] == 2 and first["train_pairs"] == 44
    record = json.loads((out / INFO_FILE).read_text())
    assert (record["num_processes"], record["steps"], record["complete"]) == (2, 5, False)
    assert [d.name for d in (out / CHECKPOINTS).iterdir()] == ["step-0000005"]
    assert sorted(p.name for p in (out / CHECKPOINTS / "step-0000005").iterdir()) == [
        "model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl",
        "rng_state_0.json", "rng_state_1.json", "scheduler.json", "trainer_state.json"]
    assert not list(out.rglob("*.tmp"))
    config = TrainConfig(model=w.backbone, lr=1e-2, max_length=64, batch_size=4, epochs=2,
                         logging_steps=1, seed=42)
    with pytest.raises(ModelError, match=r"ran as 2 process\(es\), this run has 1"):
        train_reward_model(w.pairs, config=config, output_dir=out, resume=True, progress=False)

    # 2) torchrun resumes it to the end
    second, _ = _launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *common,
                         "--resume"], w.root)
    assert second["num_processes"] == 2
    record = json.loads((out / INFO_FILE).read_text())
    assert (record["num_processes"], record["steps"], record["complete"]) == (2, STEPS, True)
    assert not (out / CHECKPOINTS).exists()  # the final model is the artifact
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    losses = [h["loss"] for h in record["history"]]
    assert len(losses) == STEPS and losses[-1] < losses[0] - 0.3  # it learned (0.69 → 0.03)

    # the same run in one process: same batches per step (4 × grad_accum 2), same seed
    one = train_reward_model(w.pairs, config=dataclasses.replace(config, grad_accum=2),
                             progress=False)
    assert one.steps == STEPS
    one_losses = [h["loss"] for h in one.history]
    # the first steps, before rounding has grown: each step held the same pairs and its gradient
    # was averaged over both processes (measured: equal to 1e-9; another cut of the same pairs
    # into steps, batch 8 × grad_accum 1, moves the first loss by 6e-2)
    np.testing.assert_allclose(losses[:3], one_losses[:3], atol=1e-5)
    # the whole run: rounding grows through Adam's steps (measured 2.6e-3 on the losses and 1% on
    # the margins; one process with 1 or 2 threads differs from itself as much)
    np.testing.assert_allclose(losses, one_losses, atol=2e-2)
    assert record["train_accuracy"] == one.train_accuracy  # the same 44 pairs, each counted once
    assert abs(record["train_loss"] - one.train_loss) < 1e-2
    # margins, not rewards: the BT loss sees only r_chosen - r_rejected, so the head's bias gets
    # a gradient that is 0 but for rounding, which Adam scales up into steps of random sign
    chosen, rejected = RewardModel.load(out).score_pairs(w.pairs)
    chosen_1, rejected_1 = one.model.score_pairs(w.pairs)
    np.testing.assert_allclose(chosen - rejected, chosen_1 - rejected_1, rtol=0.1)


def test_two_processes_train_rated_prompts_like_one(workspace: SimpleNamespace) -> None:
    """Rated data (issue 32) on 2 processes: each takes its share of every step's prompts, the
    tie parameter (outside DDP) has its gradient averaged like the model's, and the run is the
    one-process run with the same global batch. 26 prompts, batch 4: 7 batches an epoch, so the
    last step of each has one, and the second process repeats one with weight 0."""
    w, out = workspace, workspace.root / "rated"
    url = f"sqlite:///{w.root / 'rated.db'}"
    spec = "synthetic:n=26,k=4,ties=0.2,test_n=4,seed=0"
    with Store(url) as store:
        store.ingest("rated", read_source(spec))
        prompts = store.load_rated("rated", split="train")
    options = ["--model", "bow", "--precision", "fp32", "--ties", "model", "--batch-size", "4",
               "--epochs", "2", "--logging-steps", "1", "--seed", "3", "--max-length", "64"]
    document, _ = _launch([str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
                           "no", "--main_process_port", str(_free_port()), "-m", "rewardlab",
                           "train", "rated", "-o", str(out), "--db", url, "--json", *options],
                          w.root)
    record = json.loads((out / INFO_FILE).read_text())
    assert (record["num_processes"], record["steps"], record["complete"]) == (2, 8, True)
    one = train_on_rated(prompts, config=TrainConfig(model="bow", precision="fp32", ties="model",
                                                     batch_size=4, grad_accum=2, epochs=2,
                                                     logging_steps=1, seed=3, max_length=64),
                         progress=False)
    losses, one_losses = ([h["loss"] for h in r] for r in (record["history"], one.history))
    assert len(losses) == len(one_losses) == 8
    np.testing.assert_allclose(losses[:3], one_losses[:3], atol=1e-5)
    np.testing.assert_allclose(losses, one_losses, atol=2e-2)
    assert record["train_accuracy"] == pytest.approx(one.train_accuracy, abs=1e-9)
    # the tie parameter moved (from 0.5) and moved alike in both runs
    assert document["tie_parameter"] == pytest.approx(one.tie_parameter, rel=1e-3)
    assert abs(one.tie_parameter - 0.5) > 1e-2
    assert document["ties"] == one.n_ties > 0


def test_a_process_whose_partners_never_come_fails_naming_the_rendezvous(
        workspace: SimpleNamespace) -> None:
    """Rank 0 of 2 started alone (as when the other node never starts): it fails at the end of
    its own rendezvous timeout, in one line, not after the collectives' 30 minutes."""
    w, port = workspace, _free_port()
    env = {**_environment(), "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "ACCELERATE_USE_CPU": "true", "REWARDLAB_RENDEZVOUS_TIMEOUT": "5"}
    code, stdout, lines = _run([sys.executable, "-m", "rewardlab", "train", "planted", "-o",
                                str(w.root / "alone"), "--model", w.backbone, "--db", w.url,
                                "--json", *TRAIN], w.root, env)
    assert (code, stdout) == (2, "")
    assert _last_stages(lines) == {"0": f"rendezvous: joining 2 processes at 127.0.0.1:{port} "
                                         "(timeout 5 s)"}
    assert lines[-1].startswith(f"rewardlab: error: rank 0: the rendezvous of 2 processes at "
                                f"127.0.0.1:{port} failed (REWARDLAB_RENDEZVOUS_TIMEOUT=5 s): ")
    assert "1/2 clients joined" in lines[-1]
    assert not (w.root / "alone").exists()


def test_a_silent_launch_is_killed_and_its_last_stage_named(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """The watchdog the launches above run under: a process that stops printing is a hang."""
    # 5 s: the child prints its stage first thing (a bare `python -c`, no torch), then sleeps
    monkeypatch.setattr(sys.modules[__name__], "STALL_S", 5)
    pid_file = tmp_path / "child.pid"
    hang = ("import os, sys, time; print('rewardlab stage: rank 1: training steps', file=sys.stderr, "
            f"flush=True); open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)")
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"hung: nothing printed for 5 s; last stage "
                                                    r"per rank: \{'1': 'training steps'\}"):
        _run([sys.executable, "-c", hang], tmp_path, dict(os.environ))
    assert time.monotonic() - started < 120  # not the child's 600 s
    with pytest.raises(ProcessLookupError):  # killed, not left running
        os.kill(int(pid_file.read_text()), 0)


# ---------------------------------------------------------------- in this process


@pytest.mark.parametrize(("n", "batch", "accum", "world"),
                         [(48, 4, 1, 2), (50, 4, 2, 2), (13, 2, 1, 3), (7, 4, 1, 4), (9, 3, 2, 1)])
def test_each_process_takes_a_disjoint_share_of_every_step(n: int, batch: int, accum: int,
                                                           world: int) -> None:
    lengths = np.random.default_rng(0).integers(5, 60, size=n)
    config = TrainConfig(model="bow", batch_size=batch, grad_accum=accum, epochs=2, seed=3)
    shares = [_plan(lengths, config, rank=r, world=world) for r in range(world)]
    alone = _plan(lengths, TrainConfig(model="bow", batch_size=batch, grad_accum=accum * world,
                                       epochs=2, seed=3), rank=0, world=1)
    assert {len(s) for s in shares} == {len(alone)}  # every process takes every step
    for k, whole in enumerate(alone):
        steps = [s[k] for s in shares]
        real = [b for s in steps for b in s.batches[:len(s.batches) - s.lockstep]]
        assert sorted(i for b in real for i in b) == sorted(i for b in whole.batches for i in b)
        assert {s.pairs for s in steps} == {sum(len(b) for b in whole.batches)}
        # lockstep: every process runs grad_accum micro-batches (one process: what is left)
        assert {len(s.batches) for s in steps} == ({accum} if world > 1 else {len(whole.batches)})
        assert all(s.epoch == whole.epoch for s in steps)


def _launcher(*options: str) -> list[str]:
    return [sys.executable, str(BIN / "accelerate"), "launch", *options, "-m", "rewardlab",
            "train", "d", "-o", "m"]


def test_accelerate_cpu_launch_is_read_back_from_its_command_line(tmp_path: Path) -> None:
    argv = ["train", "d", "-o", "m"]
    args = split_cpu_launch(_launcher("--cpu", "--num_processes", "3", "--main_process_port",
                                      "29999"), argv)
    assert args is not None and (args.num_processes, args.main_process_port) == (3, 29999)
    module_form = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes",
                   "2", "-m", "rewardlab", *argv]
    assert split_cpu_launch(module_form, argv) is not None
    # accelerate's own config file, as `accelerate config` writes it for several CPU processes
    config = tmp_path / "multi_cpu.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\n"
                      "mixed_precision: 'no'\nnum_machines: 1\nnum_processes: 2\nuse_cpu: true\n")
    from_file = split_cpu_launch(_launcher("--config_file", str(config)), argv)
    assert from_file is not None and from_file.num_processes == 2
    # nothing to do: one process, another command, mpirun starts them, or not accelerate at all
    assert split_cpu_launch(_launcher("--cpu", "--num_processes", "1"), argv) is None
    assert split_cpu_launch(_launcher("--cpu", "--num_processes", "2"), ["train", "e"]) is None
    assert split_cpu_launch(_launcher("--cpu", "--num_processes", "2", "--mpirun_hostfile",
                                      "hosts"), argv) is None
    assert split_cpu_launch([sys.executable, "-m", "rewardlab", *argv], argv) is None


def test_accelerate_fsdp_config_is_parsed_for_a_torchrun_launch(tmp_path: Path) -> None:
    """An FSDP config from `accelerate config` reaches accelerate's torchrun launcher unchanged
    (not rewardlab's CPU relaunch); FSDP itself needs GPUs (accelerate runs it only there)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    config = tmp_path / "fsdp.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\n"
                      "fsdp_config:\n  fsdp_version: 2\n  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n"
                      "  fsdp_state_dict_type: FULL_STATE_DICT\n  fsdp_reshard_after_forward: true\n"
                      "mixed_precision: bf16\nnum_machines: 1\nnum_processes: 2\nuse_cpu: false\n")
    launch = _launcher("--config_file", str(config))
    args = _validate_launch_command(launch_command_parser().parse_args(launch[3:]))[0]
    assert args.use_fsdp and args.num_processes == 2 and args.fsdp_version == 2
    assert args.fsdp_state_dict_type == "FULL_STATE_DICT"
    assert split_cpu_launch(launch, ["train", "d", "-o", "m"]) is None
    # with --cpu accelerate takes its one-process CPU launcher even so: rewardlab starts the two
    on_cpu = split_cpu_launch(_launcher("--cpu", "--config_file", str(config)), ["train", "d", "-o", "m"])
    assert on_cpu is not None and on_cpu.num_processes == 2


def test_deepspeed_auto_values_come_from_the_run() -> None:
    plugin = DeepSpeedPlugin(zero_stage=2)  # as `accelerate config` builds it: "auto" values
    fit_deepspeed(plugin, batch_size=4, grad_accum=2, max_grad_norm=0.5)
    ds = plugin.deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"],
            ds["gradient_clipping"]) == (4, 2, 0.5)
    fit_deepspeed(plugin, batch_size=4, grad_accum=2, max_grad_norm=0.5)  # the same: accepted
    with pytest.raises(ModelError, match=r"gradient_accumulation_steps=2 .* --grad-accum 4"):
        fit_deepspeed(plugin, batch_size=4, grad_accum=4, max_grad_norm=0.5)
    fit_deepspeed(None, batch_size=4, grad_accum=4, max_grad_norm=0.5)  # no DeepSpeed: nothing


def _stand_in(kind: DistributedType, plugin: DeepSpeedPlugin | None = None) -> Any:
    """FSDP and DeepSpeed do not run on this CPU: what check_launch reads of an Accelerator."""
    return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(deepspeed_plugin=plugin))


@pytest.mark.parametrize("kind", [DistributedType.FSDP, DistributedType.DEEPSPEED])
def test_a_sharded_run_refuses_what_it_cannot_do_before_any_work(kind: DistributedType) -> None:
    sharded = _stand_in(kind, DeepSpeedPlugin(zero_stage=2) if kind == DistributedType.DEEPSPEED else None)
    ok = {"resume": False, "save_steps": 0, "max_steps": 0, "lora_r": 0, "has_output": True}
    check_launch(sharded, **ok)
    for change, message in [({"has_output": False}, "needs an output directory"),
                            ({"resume": True}, "resumable checkpoints"),
                            ({"save_steps": 10}, "resumable checkpoints"),
                            ({"lora_r": 8}, "--lora-r is not supported")]:
        with pytest.raises(ModelError, match=message):
            check_launch(sharded, **{**ok, **change})
    check_launch(_stand_in(DistributedType.MULTI_CPU),  # DDP: every process has all of it
                 **{**ok, "resume": True, "lora_r": 8, "has_output": False})


def test_zero3_must_be_able_to_gather_the_model_it_saves() -> None:
    ok = {"resume": False, "save_steps": 0, "max_steps": 0, "lora_r": 0, "has_output": True}
    with pytest.raises(ModelError, match="zero3_save_16bit_model: true"):
        check_launch(_stand_in(DistributedType.DEEPSPEED, DeepSpeedPlugin(zero_stage=3)), **ok)
    check_launch(_stand_in(DistributedType.DEEPSPEED,
                           DeepSpeedPlugin(zero_stage=3, zero3_save_16bit_model=True)), **ok)


def test_the_final_model_is_gathered_written_and_read_back_whole(workspace: SimpleNamespace,
                                                                tmp_path: Path) -> None:
    """The save path of FSDP/DeepSpeed runs (`get_state_dict`, `save_pretrained(state_dict=…)`,
    read back), here on one process, where accelerate's gather is the plain state dict."""
    from transformers import AutoModelForSequenceClassification

    accelerator, _ = make_accelerator("fp32", model="minilm")
    try:
        trained = accelerator.prepare(AutoModelForSequenceClassification.from_pretrained(
            workspace.backbone))
        back = gather_model(accelerator, trained, tmp_path)
    finally:
        AcceleratorState._reset_state()
    assert type(back) is type(accelerator.unwrap_model(trained))
    assert (tmp_path / "model.safetensors").is_file()
    expected = accelerator.unwrap_model(trained).state_dict()
    assert back.state_dict().keys() == expected.keys()
    assert all(torch.equal(back.state_dict()[k], expected[k]) for k in expected)


def test_processes_on_one_machine_share_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    torch.set_num_threads(cores * 2)  # as an inherited OMP_NUM_THREADS too large for N processes
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        with threads_for("minilm"):
            assert torch.get_num_threads() == max(1, cores // 2)
        assert torch.get_num_threads() == cores * 2
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        with threads_for("minilm"):  # one process: its threads are left as they are
            assert torch.get_num_threads() == cores * 2
    finally:
        torch.set_num_threads(before)


def test_the_rank_is_read_from_the_launchers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert process_rank() == 0
    monkeypatch.setenv("PMI_RANK", "3")  # mpirun
    assert process_rank() == 3
    monkeypatch.setenv("RANK", "1")  # torchrun
    assert process_rank() == 1
