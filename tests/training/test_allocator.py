"""The heap allocator a `rewardlab` command runs on (issue 33): jemalloc where it is installed.

`exec_with_jemalloc` runs the command again with jemalloc preloaded; these tests run real processes
(the re-exec replaces the process, so nothing of it can be watched from inside pytest's own).
A `-c` program stands in for the console script: its `sys.argv[0]` says `rewardlab`, and the re-exec
runs the same `-c` program again, now on jemalloc, which prints what it got.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rewardlab.training.memory import JEMALLOC_CONF, jemalloc_library

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")

# On CI the setup installs jemalloc (scripts/install_jemalloc.sh): its absence there is a failure.
needs_jemalloc = pytest.mark.skipif(jemalloc_library() is None and os.environ.get("CI") != "true",
                                    reason="libjemalloc2 not installed (scripts/install_jemalloc.sh)")

PROBE = """
import json, os, sys
sys.argv[0] = "/somewhere/bin/rewardlab"  # what the console script's argv[0] looks like
from rewardlab.training.memory import allocator, exec_with_jemalloc
exec_with_jemalloc()
print(json.dumps({"allocator": allocator(), "pid": os.getpid(),
                  "preload": os.environ.get("LD_PRELOAD", ""),
                  "conf": os.environ.get("MALLOC_CONF", "")}))
"""


def _probe(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "MALLOC_CONF", "REWARDLAB_ALLOCATOR")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True,
                          text=True, check=True)
    assert done.stderr == ""  # no loader warning, nothing else said
    result: dict[str, str] = json.loads(done.stdout)
    return result


@needs_jemalloc
def test_the_command_runs_again_on_jemalloc_in_the_same_process() -> None:
    assert jemalloc_library() is not None
    got = _probe()
    assert got["allocator"] == "jemalloc"
    assert got["preload"] == jemalloc_library()
    assert got["conf"] == JEMALLOC_CONF


@needs_jemalloc
def test_a_user_setting_wins() -> None:
    assert _probe(REWARDLAB_ALLOCATOR="system")["allocator"] == "system"
    assert _probe(MALLOC_CONF="dirty_decay_ms:5000")["conf"] == "dirty_decay_ms:5000"
    # a preload of the user's own is kept as it is, not doubled with jemalloc
    own = _probe(LD_PRELOAD="libm.so.6")
    assert (own["allocator"], own["preload"]) == ("system", "libm.so.6")


def test_only_the_rewardlab_command_is_run_again() -> None:
    """Another program importing rewardlab (pytest here, a notebook) keeps its allocator."""
    probe = PROBE.replace('sys.argv[0] = "/somewhere/bin/rewardlab"', 'sys.argv[0] = "/bin/other"')
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "REWARDLAB_ALLOCATOR")}
    done = subprocess.run([sys.executable, "-c", probe], env=base, capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout)["allocator"] == "system"


RELEASE = """
import json
from rewardlab.training.memory import allocator, release_memory, rss_mb
blocks = [bytearray(1 << 20) for _ in range(300)]  # 300 MB, every page written
held = rss_mb()
del blocks
freed = rss_mb()  # with decay off, jemalloc keeps the freed pages for the next allocations
release_memory()
print(json.dumps({"allocator": allocator(), "held": held, "freed": freed, "after": rss_mb()}))
"""


@needs_jemalloc
def test_release_memory_gives_jemalloc_pages_back() -> None:
    """Decay is off (JEMALLOC_CONF: a step reuses the last one's pages), so what a run frees
    stays resident until `release_memory` purges the arenas; glibc's malloc_trim would not."""
    env = {**os.environ, "LD_PRELOAD": str(jemalloc_library()), "MALLOC_CONF": JEMALLOC_CONF}
    done = subprocess.run([sys.executable, "-c", RELEASE], env=env, capture_output=True,
                          text=True, check=True)
    got = json.loads(done.stdout)
    assert got["allocator"] == "jemalloc"
    assert got["freed"] > got["held"] - 50, got  # kept by jemalloc after the free
    assert got["after"] < got["freed"] - 250, got  # given back by the purge
