"""Request bodies of the serve API, and the limits each text must stay under.

Field names follow OpenRLHF's remote reward model (`openrlhf/cli/serve_rm.py` and the client in
`openrlhf/utils/agent.py`): `{"query": [...], "prompts": [...], "labels": [...]}` in,
`{"rewards": [...], "scores": [...], "extra_logs": {...}}` out. Strings must be strings: pydantic's
strict mode refuses `1` or `null` where text belongs instead of scoring `"1"` or `"None"`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from rewardlab.web.serve.serve_config import ServeConfig

__all__ = ["ApiError", "GetRewardRequest", "ScoreRequest", "PairIn", "CompareRequest",
           "check_count", "check_text"]


class ApiError(Exception):
    """An HTTP error with a JSON body `{"error": message, "field": field}` (field None: no one
    field is to blame, e.g. a batch that failed to score)."""

    def __init__(self, status: int, message: str, *, field: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class _Body(BaseModel):
    # clients may send more than we read (OpenRLHF adds fields over time): ignore, do not refuse
    model_config = ConfigDict(extra="ignore")


class GetRewardRequest(_Body):
    """OpenRLHF's remote RM request: each query is prompt + response as the policy produced it."""

    query: list[StrictStr]
    prompts: list[Any] | None = Field(
        default=None, description="the prompts alone (accepted, not used: the query is split by "
                                  "the model's input rule)")
    labels: list[Any] | None = Field(default=None, description="ground truth (accepted, not used)")


class PairIn(_Body):
    prompt: StrictStr
    response: StrictStr


class ScoreRequest(_Body):
    pairs: list[PairIn]


class CompareRequest(_Body):
    """Three parallel lists of one length: row i is (prompt[i], chosen[i], rejected[i])."""

    prompt: list[StrictStr]
    chosen: list[StrictStr]
    rejected: list[StrictStr]


def check_count(field: str, n: int, config: ServeConfig) -> None:
    """Refuse more than `--max-queries` items in one request (413)."""
    if n > config.max_queries:
        raise ApiError(413, f"{n:,} items in one request; the limit is {config.max_queries:,} "
                            f"(--max-queries)", field=field)


def check_text(field: str, text: str, config: ServeConfig) -> None:
    """Refuse an over-long text (413) or one that is not valid Unicode (422: a lone surrogate
    from `"\\ud800"` in the JSON would fail the tokenizer in the middle of a batch)."""
    if len(text) > config.max_chars:
        raise ApiError(413, f"{len(text):,} characters; the limit is {config.max_chars:,} "
                            f"(--max-chars)", field=field)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(422, f"not valid Unicode text ({e.reason} at character {e.start})",
                       field=field) from e
