"""User-facing errors: the CLI prints `str(error)` on one line (traceback only with `--debug`)."""

from __future__ import annotations

__all__ = ["RewardlabError", "SourceError", "StoreError", "ModelError", "SelectionError", "WebError"]


class RewardlabError(Exception):
    """An expected failure caused by input, not by a bug: its message must say what to fix.

    The CLI prints `str(error)` on one line and exits with status 2; library callers catch this one
    class for every stage (each stage raises its own subclass: `SourceError`, `StoreError`,
    `ModelError`, `SelectionError`, `WebError`).

    Parameters
    ----------
    message : str
        One line naming the file, line or field at fault and what to do about it.

    >>> from rewardlab.data.sources import read_source
    >>> try:
    ...     read_source("synthetic:n=8", test_fraction=1.5)
    ... except RewardlabError as error:
    ...     print(error)
    test fraction 1.5 must be between 0 and 1 (exclusive)
    """


class SourceError(RewardlabError):
    """Unknown source, unreadable file or malformed row (message starts with `FILE:LINE:`)."""


class StoreError(RewardlabError):
    """Bad database URL, unknown dataset, or an import that does not fit the dataset."""


class ModelError(RewardlabError):
    """Missing or corrupt checkpoint, unknown backbone."""


class SelectionError(RewardlabError):
    """Empty training selection, unknown detector or condition."""


class WebError(RewardlabError):
    """A server that cannot start as asked (e.g. a non-loopback bind without a token)."""
