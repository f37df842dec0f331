"""`rewardlab review`: flag review pages and a JSON API over the store (FastAPI, Jinja2, small JS).

    >>> import tempfile
    >>> from rewardlab.store.store import Store
    >>> from rewardlab.web.review import create_review_app, ReviewConfig
    >>> app = create_review_app(Store(f"sqlite:///{tempfile.mkdtemp()}/r.db"), ReviewConfig(), token=None)
    >>> {"/queue", "/api/reviews"} <= {route.path for route in app.routes}
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rewardlab.web.review.review_config import ReviewConfig

if TYPE_CHECKING:
    from rewardlab.web.review.review_app import create_review_app

__all__ = ["create_review_app", "ReviewConfig"]


def __getattr__(name: str) -> Any:
    """The app on first use: importing `rewardlab.web.review.review_config` (every CLI command does, to
    build its options) must not pull in FastAPI, the detectors and scipy (~2.5 s; issue 34)."""
    if name == "create_review_app":
        from rewardlab.web.review.review_app import create_review_app

        return create_review_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
