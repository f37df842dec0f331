"""`ReviewConfig`: how `rewardlab review` listens and pages (the CLI flags mirror it).

The token is not a field: it is a secret, and configs get printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rewardlab.errors import WebError
from rewardlab.store.review_sql import MAX_QUEUE_PAGE
from rewardlab.web.security import check_address

__all__ = ["ReviewConfig"]


def _opt(default: Any, help_text: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass(frozen=True)
class ReviewConfig:
    """Options of one `rewardlab review` process."""

    host: str = _opt("127.0.0.1", "address to bind; anything but loopback needs a token")
    port: int = _opt(8501, "TCP port")
    reviewer: str | None = _opt(None, "reviewer name the pages start with (each browser can "
                                "change it; default: $REWARDLAB_REVIEWER, else the login name)")
    page_size: int = _opt(20, "cards per queue page")
    max_body_bytes: int = _opt(64 * 1024, "largest request body; larger → 413")
    # no note cap here: notes have one cap wherever they come from (store.reviews.MAX_NOTE_CHARS)

    def __post_init__(self) -> None:
        check_address(self.host, self.port)
        if not 1 <= self.page_size <= MAX_QUEUE_PAGE:
            raise WebError(f"--page-size must be in 1..{MAX_QUEUE_PAGE} (got {self.page_size})")
        if self.max_body_bytes < 1:
            raise WebError(f"--max-body-bytes must be at least 1 (got {self.max_body_bytes})")
        if self.reviewer is not None and not self.reviewer.strip():
            raise WebError("--reviewer is empty: give a name or leave it out")
