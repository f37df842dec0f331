"""A job for the executor tests (tests/experiment/test_fanout.py): a module-level function, so a
spawned worker or a Ray task imports it by name. A task is (value, behaviour, marker file): each
try appends one line to the marker, so the test counts the tries."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from rewardlab.errors import RewardlabError

Task = tuple[int, str, str]


def job(task: Task, factor: int) -> int:
    """value × the shared factor, after behaving as told:

    - "works": nothing else;
    - "killed_once": SIGKILLs its own worker on the first try (a preempted worker, at a known
      point of its task, no timing involved), works on the next;
    - "always_killed": SIGKILLs its worker on every try: it fails after its retries;
    - "refused": raises a RewardlabError (the input at fault: not tried again)."""
    value, behaviour, marker = task
    with Path(marker).open("a") as f:
        f.write("try\n")
    tries = len(Path(marker).read_text().splitlines())
    if behaviour == "always_killed" or (behaviour == "killed_once" and tries == 1):
        os.kill(os.getpid(), signal.SIGKILL)
    if behaviour == "refused":
        raise RewardlabError(f"task {value}: refused")
    return value * factor
