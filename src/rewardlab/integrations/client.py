"""A small client for a running `rewardlab serve`: POST /score, standard library only.

The trainer adapters (TRL, verl) call it from inside training loops, so it adds no dependency,
keeps requests under the server's `--max-queries`, and turns every failure into one line that
says what to check.

>>> from rewardlab.models.backbones import load_backbone
>>> from rewardlab.models.reward_model import RewardModel
>>> from rewardlab.web.serve import ServeConfig, create_serve_app
>>> from rewardlab.web.server import background_server
>>> rm = RewardModel(*load_backbone("bow", max_length=64, seed=0), max_length=64)
>>> with background_server(create_serve_app(rm, ServeConfig(), model_dir="bow")) as url:
...     served = RewardClient(url + "/get_reward").score(["Human: hi"], ["Hello!"])
>>> abs(served[0] - rm.score(["Human: hi"], ["Hello!"])[0]) < 1e-5  # the same reward over HTTP
True
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from rewardlab.errors import WebError
from rewardlab.web.security import resolve_token

__all__ = ["URL_ENV", "DEFAULT_URL", "RewardClient", "is_url"]

URL_ENV = "REWARDLAB_URL"
DEFAULT_URL = "http://127.0.0.1:8000"
_ROUTES = ("/get_reward", "/score", "/compare", "/info", "/health")


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


class RewardClient:
    """Rewards of (prompt, response) pairs from a `rewardlab serve` at `url`.

    `url` is the server's base URL (a pasted `…/get_reward` or `…/score` is fine); `token`
    defaults to $REWARDLAB_TOKEN. Requests carry at most `chunk` pairs each.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None,
                 timeout: float = 120.0, chunk: int = 256) -> None:
        base = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        if not is_url(base):
            raise WebError(f"reward server URL must start with http:// or https:// (got {base!r})")
        self.url = next((base[:-len(r)] for r in _ROUTES if base.endswith(r)), base)
        self.token = resolve_token(token)
        self.timeout = timeout
        self.chunk = chunk

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One reward per pair, in order (the server batches them with other callers')."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        rewards: list[float] = []
        for start in range(0, len(prompts), self.chunk):
            pairs = [{"prompt": p, "response": r} for p, r in
                     zip(prompts[start:start + self.chunk], responses[start:start + self.chunk])]
            rewards += [float(x) for x in self._post("/score", {"pairs": pairs})["rewards"]]
        return rewards

    def _post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except urllib.error.HTTPError as e:
            raise WebError(f"{self.url}{route}: HTTP {e.code}: {_error_text(e)}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise WebError(f"cannot reach the reward server at {self.url} ({reason}); is "
                           f"`rewardlab serve` running there?") from e


def _error_text(error: urllib.error.HTTPError) -> str:
    """The server's JSON error ("field: message"), or the raw body."""
    raw = error.read().decode("utf-8", "replace")
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:300] or str(error.reason)
    if isinstance(body, dict) and "error" in body:
        field = body.get("field")
        return f"{body['error']}" + (f" (field {field})" if field else "")
    return raw[:300]
