"""`rewardlab review`: flag review pages and a JSON API over the store (FastAPI, Jinja2, small JS).

    >>> from rewardlab.web.review import create_review_app, ReviewConfig
    >>> # app = create_review_app(Store(url), ReviewConfig(), token=None, dataset="hh")
"""

from __future__ import annotations

from rewardlab.web.review.app import create_review_app
from rewardlab.web.review.config import ReviewConfig

__all__ = ["create_review_app", "ReviewConfig"]
