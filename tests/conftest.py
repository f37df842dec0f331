"""Shared fixtures. Tests never touch the network: the HF hub is forced offline here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_PATH = REPO_ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-sample.jsonl.gz"


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The 1,512-pair HH-RLHF harmless sample shipped in ../shared (never copied into the repo)."""
    assert SAMPLE_PATH.exists(), f"shared sample missing at {SAMPLE_PATH}"
    return SAMPLE_PATH
