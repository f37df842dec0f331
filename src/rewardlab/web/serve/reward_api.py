"""The reward API as a FastAPI app: OpenRLHF's `/get_reward`, `/score`, `/compare`, `/health`, `/info`.

A model trained with `--ties model` also gets P(win), P(tie), P(loss) in `/compare` and its tie
model in `/info` (docs/serving.md); other models' responses have no such fields.

>>> import json, urllib.request
>>> from rewardlab.models.backbones import load_backbone
>>> from rewardlab.web.server import background_server
>>> rm = RewardModel(*load_backbone("bow", max_length=64, seed=0), max_length=64)
>>> app = create_serve_app(rm, ServeConfig(), model_dir="bow")
>>> query = json.dumps({"query": ["Human: hi\\n\\nAssistant: Hello!"]}).encode()
>>> with background_server(app) as url:  # `run_server(app, host=…, port=…)` in the foreground
...     request = urllib.request.Request(url + "/get_reward", query, {"Content-Type": "application/json"})
...     reply = json.load(urllib.request.urlopen(request))
>>> len(reply["rewards"]), abs(reply["rewards"][0] - rm.score(["Human: hi"], ["Hello!"])[0]) < 1e-5
(1, True)

Every error is JSON `{"error": "...", "field": "..."}`: 400 malformed JSON or a Host that is not
this server, 401 missing or wrong token, 403 a browser page of another site, 413 body/count/length
over a limit, 415 a body not declared JSON, 422 a field of the wrong shape, 500 a batch that failed
to score (only the requests in it), 503 a request still queued when the server began to stop. The
server itself never stops on bad input.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from rewardlab.errors import ModelError
from rewardlab.evaluation.metrics import sigmoid
from rewardlab.evaluation.outcomes import OUTCOME_FIELDS, pair_outcomes
from rewardlab.jsonable import to_jsonable
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.ties import TieModel, tie_model_of
from rewardlab.web.security import (
    BearerAuth,
    BodyLimit,
    JsonApiGuard,
    allowed_hosts,
    check_token,
)
from rewardlab.web.serve.batcher import BatcherClosed, MicroBatcher, Scored
from rewardlab.web.serve.queries import QueryReader, make_query_reader
from rewardlab.web.serve.schemas import (
    ApiError,
    CompareRequest,
    GetRewardRequest,
    ScoreRequest,
    check_count,
    check_text,
)
from rewardlab.web.serve.scoring import make_score_fn, model_facts, serving_precision
from rewardlab.web.serve.serve_config import ServeConfig

__all__ = ["create_serve_app", "OPEN_PATHS"]

log = logging.getLogger(__name__)
B = TypeVar("B", bound=BaseModel)

OPEN_PATHS = ("/health",)  # the one route a load balancer may probe without the token
# Retry-After of a request turned away while the server stops: a replica (or this one, restarted)
# takes it; a few seconds keeps an RL loop's retries from hammering a server that is going away
RETRY_AFTER_S = 5


def create_serve_app(model: RewardModel, config: ServeConfig, *, token: str | None = None,
                     model_dir: str = "") -> FastAPI:
    """The app for `model`; the batcher starts and stops with the app's lifespan.

    With a `token`, every route but `/health` needs `Authorization: Bearer <token>`. Every request
    must name this server in its Host header and come from no other site (`JsonApiGuard`).
    When a stop begins, `app.state.on_stop` (called by `web.server`) turns the queued requests away
    with 503 and lets the batches being scored finish.
    """
    if token is not None:
        check_token(token)  # one a client cannot send would lock every client out
    tie = tie_model_of(model.info)  # a malformed `ties` is a ModelError now, not a 500 per request
    precision = serving_precision(model, config.precision)
    reader = make_query_reader(model, query_format=config.query_format,
                               policy_tokenizer=config.policy_tokenizer)
    score_fn = make_score_fn(model, precision=precision, batch_size=config.forward_batch)
    batcher = MicroBatcher(score_fn, max_batch=config.max_batch,
                           max_wait_s=config.max_wait_ms / 1000.0,
                           workers=config.workers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:  # uvicorn lets in-flight requests finish first, then this scores what is queued
            await batcher.stop()

    app = FastAPI(title="rewardlab serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.batcher = batcher
    app.state.on_stop = batcher.close
    app.state.facts = model_facts(model, model_dir=model_dir, config=config, precision=precision,
                                  tie=tie)
    app.state.facts["queries"] = reader.facts()
    _add_error_handlers(app)
    _add_routes(app, reader, config, batcher, tie)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if token is not None:  # no body is read for a request without it
        app.add_middleware(BearerAuth, token=token, open_paths=OPEN_PATHS)
    # added last = outermost: a rebinding page or another site learns nothing, not even about auth
    app.add_middleware(JsonApiGuard, allowed=allowed_hosts(config.host, config.allow_hosts))
    return app


def _error(status: int, message: str, field: str | None) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _field_path(loc: Sequence[Any]) -> str:
    """pydantic's ("pairs", 0, "response") → "pairs[0].response"; () → "body"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), None)


async def _read(request: Request, schema: type[B]) -> B:
    """The body as `schema` (declared JSON: `JsonApiGuard` refused anything else): 400 if it is
    not JSON, 422 naming the first field of the wrong shape."""
    try:
        body = await request.body()
    except ClientDisconnect as e:
        # a client that gives up mid-body (a trainer killed, a timeout) is routine, not a server
        # error: one line, and the 400 goes nowhere
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s %s: %s disconnected before sending its whole body", request.method,
                 request.url.path, client)
        raise ApiError(400, "client disconnected before sending the whole body",
                       field="body") from e
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError; [[[…]]]
        raise ApiError(400, f"malformed JSON: {str(e)[:200]}", field="body") from e
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        field = _field_path(errors[0]["loc"])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ApiError(422, f"{field}: {errors[0]['msg']}{more}", field=field) from e


async def _score(batcher: MicroBatcher, prompts: list[str], responses: list[str]) -> Scored:
    try:
        return await batcher.score(prompts, responses)
    except BatcherClosed as e:
        raise ApiError(503, "the server is shutting down: send the request again (to another "
                            f"replica, or here in {RETRY_AFTER_S} s)", field=None) from e
    except Exception as e:  # noqa: BLE001 - the batch failed; this request gets a 500, not the server
        raise ApiError(500, f"scoring failed: {type(e).__name__}: {str(e)[:300]}", field=None
                       ) from e


def _check_parallel(config: ServeConfig, lists: dict[str, list[str]]) -> None:
    """Same length (422 naming the odd one), under the count limit, every text under the limits."""
    n = len(next(iter(lists.values())))
    for name, values in lists.items():
        if len(values) != n:
            first = next(iter(lists))
            raise ApiError(422, f"{name} has {len(values)} items but {first} has {n}", field=name)
    check_count(next(iter(lists)), n, config)
    for name, values in lists.items():
        for i, text in enumerate(values):
            check_text(f"{name}[{i}]", text, config)


def _split_all(reader: QueryReader, queries: list[str]) -> tuple[list[str], list[str]]:
    prompts, responses = [], []
    for i, query in enumerate(queries):
        try:
            prompt, response = reader.split(query)  # the policy's family, else the model's rule
        except ModelError as e:
            raise ApiError(422, f"query[{i}]: {e}", field=f"query[{i}]") from e
        prompts.append(prompt)
        responses.append(response)
    return prompts, responses


def _json(payload: dict[str, Any]) -> JSONResponse:
    return JSONResponse(to_jsonable(payload))  # a NaN reward becomes null, not a 500


def _outcome_columns(tie: TieModel | None, chosen: np.ndarray, rejected: np.ndarray
                     ) -> dict[str, list[float]]:
    """p_win, p_tie, p_loss lists of chosen over rejected (as `score --file`); {} without a tie
    model, so other models' /compare answers are unchanged."""
    if tie is None:
        return {}
    rows = pair_outcomes(tie, chosen.tolist(), rejected.tolist())
    return {key: [row[key] for row in rows] for key in OUTCOME_FIELDS}


def _add_routes(app: FastAPI, reader: QueryReader, config: ServeConfig,
                batcher: MicroBatcher, tie: TieModel | None) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> JSONResponse:
        return _json({**app.state.facts, "batches": vars(batcher.stats).copy()})

    @app.post("/get_reward")
    async def get_reward(request: Request) -> JSONResponse:
        """OpenRLHF's remote reward model: rewards, scores = sigmoid(reward), extra_logs."""
        body = await _read(request, GetRewardRequest)
        _check_parallel(config, {"query": body.query})
        for name in ("prompts", "labels"):
            values = getattr(body, name)
            if values is not None and len(values) != len(body.query):
                raise ApiError(422, f"{name} has {len(values)} items but query has "
                                    f"{len(body.query)}", field=name)
        scored = await _score(batcher, *_split_all(reader, body.query))
        rewards = scored.rewards
        return _json({"rewards": rewards, "scores": sigmoid(np.array(rewards)).tolist(),
                      "extra_logs": {"rm_truncated": [float(t) for t in scored.truncated]}})

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        body = await _read(request, ScoreRequest)
        check_count("pairs", len(body.pairs), config)
        for i, pair in enumerate(body.pairs):
            check_text(f"pairs[{i}].prompt", pair.prompt, config)
            check_text(f"pairs[{i}].response", pair.response, config)
        scored = await _score(batcher, [p.prompt for p in body.pairs],
                              [p.response for p in body.pairs])
        return _json({"rewards": scored.rewards, "truncated": scored.truncated})

    @app.post("/compare")
    async def compare(request: Request) -> JSONResponse:
        """Both sides in one batch; P(chosen ≻ rejected) = sigmoid(r_chosen − r_rejected) (BT);
        with a tie model also p_win, p_tie, p_loss."""
        body = await _read(request, CompareRequest)
        _check_parallel(config, {"prompt": body.prompt, "chosen": body.chosen,
                                 "rejected": body.rejected})
        n = len(body.prompt)
        scored = await _score(batcher, body.prompt + body.prompt, body.chosen + body.rejected)
        chosen, rejected = np.array(scored.rewards[:n]), np.array(scored.rewards[n:])
        cut = np.array(scored.truncated[:n], dtype=bool) | np.array(scored.truncated[n:], dtype=bool)
        return _json({"chosen_rewards": chosen.tolist(), "rejected_rewards": rejected.tolist(),
                      "p_chosen": sigmoid(chosen - rejected).tolist(), "truncated": cut.tolist(),
                      **_outcome_columns(tie, chosen, rejected)})
