"""The review app: server-rendered pages over the store, a small script, and the same over JSON.

>>> import json, tempfile, urllib.request
>>> from rewardlab.web.server import background_server
>>> app = create_review_app(Store(f"sqlite:///{tempfile.mkdtemp()}/review.db"), ReviewConfig())
>>> with background_server(app) as url:  # `run_server(app, host=…, port=8501)` in the foreground
...     datasets = json.load(urllib.request.urlopen(url + "/api/datasets"))
>>> datasets
{'datasets': []}

Pages: `/` datasets, `/queue` flag cards (dataset, detector or any, review state, score order),
`/precision` (+ `/precision.png`). JSON: `GET /api/datasets`, `GET /api/flags`,
`POST /api/reviews`, `GET /api/reviews`, `GET /api/reviews/stats`. Every API error is
`{"error": "...", "field": "..."}`: 400 bad request, 401 no token, 403 cross-site write, 404 no
such dataset, 413 body too large, 415 not JSON, 422 a field of the wrong shape (or a verdict on a
pair the detector did not flag); a bug is a JSON 500, never a plain-text one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from rewardlab.errors import RewardlabError
from rewardlab.jsonable import to_jsonable
from rewardlab.store.records import REVIEW_STATES
from rewardlab.store.review_sql import MAX_NOTE_CHARS
from rewardlab.store.store import Store, default_reviewer
from rewardlab.web.review.guard import ReviewGuard
from rewardlab.web.review.precision_figure import plot_precision_by_score
from rewardlab.web.review.review_config import ReviewConfig
from rewardlab.web.review.views import (
    KIND_LABELS,
    VERDICT_LABELS,
    dataset_views,
    detector_kind,
    detector_stats,
    flags_page,
)
from rewardlab.web.security import BodyLimit, is_loopback

__all__ = ["create_review_app", "ApiError", "ReviewIn"]

HERE = Path(__file__).parent
# Example ids are 32-bit columns on PostgreSQL (SERIAL); one bound for both backends, checked here,
# so 2**31 or 10**30 is a 422 and not a database overflow (a plain-text 500).
MAX_ID = 2**31 - 1
State = Literal["all", "unreviewed", "reviewed", "needs_review", "disagreements"]
Sort = Literal["desc", "asc"]


class ApiError(Exception):
    """An expected failure of one request: its status, one-line message and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _no_nul(text: str) -> str:
    # PostgreSQL refuses NUL in text (a 500 deep in the driver); SQLite would store it
    if "\x00" in text:
        raise ValueError("must not contain a NUL character (\\x00)")
    return text


Text = Annotated[str, AfterValidator(_no_nul)]


class ReviewIn(BaseModel):
    """`POST /api/reviews` body."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=200)
    example_id: int = Field(ge=1, le=MAX_ID)
    detector: str = Field(min_length=1, max_length=200)
    verdict: Literal["tp", "fp", "needs_review"]
    note: Text = ""
    reviewer: Text | None = Field(default=None, max_length=200)


def _templates() -> Environment:
    # autoescape everywhere: every string from the data is HTML-escaped unless a template says
    # otherwise, and none does
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda x: "–" if x is None else f"{x:.3g}"
    env.filters["pct"] = lambda x: "–" if x is None else f"{100 * x:.1f}%"
    env.filters["ci"] = lambda ci: "–" if ci is None else f"{100 * ci[0]:.0f}–{100 * ci[1]:.0f}%"
    env.globals["verdict_labels"] = VERDICT_LABELS
    env.globals["kind_labels"] = KIND_LABELS
    env.globals["max_note_chars"] = MAX_NOTE_CHARS
    return env


def create_review_app(store: Store, config: ReviewConfig | None = None, *,
                      token: str | None = None, dataset: str | None = None) -> FastAPI:
    """The review app over `store`. `dataset` is where the queue starts (default: the first).

    With a `token`, every route needs it (Bearer, or the cookie `?token=` sets); without one the
    app answers only to loopback Host names. Writes must be same-origin (see `guard.py`)."""
    config = config or ReviewConfig()
    app = FastAPI(title="rewardlab review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.config = config
    app.state.reviewer = config.reviewer or default_reviewer()
    app.state.dataset = dataset
    app.state.templates = _templates()
    _add_error_handlers(app)
    _add_pages(app)
    _add_api(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    # added last = outermost: a request without the token or from another site reads no body
    app.middleware("http")(ReviewGuard(token=token, local_only=is_loopback(config.host)))
    return app


# ---- errors ------------------------------------------------------------------------------------


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def _error_response(request: Request, status: int, message: str, field: str | None) -> Response:
    if _wants_html(request):
        return _render(request, "error.html", status=status, status_code=status, message=message)
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(request, exc.status, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        field = str(first["loc"][-1]) if first.get("loc") else None
        return _error_response(request, 422, f"{field}: {first['msg']}", field)

    @app.exception_handler(RewardlabError)
    async def rewardlab_error(request: Request, exc: RewardlabError) -> Response:
        return _error_response(request, 422, str(exc), None)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> Response:
        # a last resort: every expected failure is a 4xx above. Starlette re-raises after this
        # answer, so the server still logs the traceback; the client gets the API's JSON shape
        return _error_response(request, 500, "internal error (see the server log)", None)


# ---- shared helpers ----------------------------------------------------------------------------


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _dataset(request: Request, name: str | None) -> str:
    """`name`, else the app's start dataset, else the first; 404 for a dataset the store lacks."""
    names = _store(request).dataset_names()
    chosen = name or request.app.state.dataset or (names[0] if names else None)
    if chosen is None:
        raise ApiError(404, "the store has no datasets yet: run `rewardlab ingest` and "
                            "`rewardlab flag` first", "dataset")
    if chosen not in names:
        raise ApiError(404, f"no dataset {chosen!r}; datasets: {', '.join(names) or 'none'}",
                       "dataset")
    return chosen


def _detector(request: Request, dataset: str, detector: str | None) -> str | None:
    """None for every detector ("" or "any"); 404 for one that never ran on `dataset`."""
    if detector in (None, "", "any"):
        return None
    ran = _store(request).latest_runs(dataset)
    if detector not in ran:
        raise ApiError(404, f"detector {detector!r} has not run on dataset {dataset!r}; ran: "
                            f"{', '.join(sorted(ran)) or 'none'}", "detector")
    return detector


def _render(request: Request, template: str, *, status_code: int = 200, active: str = "",
            **context: Any) -> HTMLResponse:
    env: Environment = request.app.state.templates
    page = env.get_template(template).render(reviewer=request.app.state.reviewer, active=active,
                                             **context)
    return HTMLResponse(page, status_code=status_code)


def _json(payload: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(to_jsonable(payload), status_code=status_code)


Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
Limit = Annotated[int | None, Query(ge=1, le=500)]
Reviewer = Annotated[Text | None, Query(max_length=200)]


def _queue(request: Request, dataset: str | None, detector: str | None, state: str, sort: str,
           offset: int, limit: int | None, reviewer: str | None) -> dict[str, Any]:
    name = _dataset(request, dataset)
    return flags_page(_store(request), name, detector=_detector(request, name, detector),
                      state=state, reviewer=reviewer or None, ascending=sort == "asc",
                      offset=offset, limit=limit or request.app.state.config.page_size)


# ---- pages -------------------------------------------------------------------------------------


def _add_pages(app: FastAPI) -> None:
    @app.get("/", response_class=HTMLResponse)
    def datasets_page(request: Request) -> HTMLResponse:
        return _render(request, "datasets.html", active="datasets",
                       datasets=dataset_views(_store(request)))

    @app.get("/queue", response_class=HTMLResponse)
    def queue_page(request: Request, dataset: str | None = None, detector: str | None = None,
                   state: State = "unreviewed", sort: Sort = "desc", offset: Offset = 0,
                   limit: Limit = None) -> HTMLResponse:
        page = _queue(request, dataset, detector, state, sort, offset, limit, None)
        store = _store(request)
        return _render(request, "queue.html", active="queue", page=page, dataset=page["dataset"],
                       datasets=store.dataset_names(),
                       detectors={d: detector_kind(d)
                                  for d in sorted(store.latest_runs(page["dataset"]))},
                       detector=detector or "any", state=state, sort=sort,
                       states=REVIEW_STATES)

    @app.get("/precision", response_class=HTMLResponse)
    def precision_page(request: Request, dataset: str | None = None) -> HTMLResponse:
        name = _dataset(request, dataset)
        stats = detector_stats(_store(request), name)
        return _render(request, "precision.html", active="precision", dataset=name, stats=stats,
                       datasets=_store(request).dataset_names(),
                       has_figure=any(s["buckets"] for s in stats))

    @app.get("/precision.png")
    def precision_png(request: Request, dataset: str | None = None) -> Response:
        png = plot_precision_by_score(detector_stats(_store(request), _dataset(request, dataset)))
        if png is None:
            raise ApiError(404, "no decided reviews yet, so no figure", "dataset")
        return Response(png, media_type="image/png")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=308)


# ---- JSON API ----------------------------------------------------------------------------------


async def _review_body(request: Request) -> ReviewIn:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(415, "send the review as JSON (Content-Type: application/json)",
                       "Content-Type")
    try:
        return ReviewIn.model_validate_json(await request.body())
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(map(str, first["loc"])) or "body"
        status = 400 if first["type"] == "json_invalid" else 422
        raise ApiError(status, f"{field}: {first['msg']}", field) from e


def _add_api(app: FastAPI) -> None:
    @app.get("/api/datasets")
    def api_datasets(request: Request) -> JSONResponse:
        return _json({"datasets": dataset_views(_store(request))})

    @app.get("/api/flags")
    def api_flags(request: Request, dataset: str | None = None, detector: str | None = None,
                  state: State = "all", sort: Sort = "desc", offset: Offset = 0,
                  limit: Limit = None, reviewer: Reviewer = None) -> JSONResponse:
        return _json(_queue(request, dataset, detector, state, sort, offset, limit, reviewer))

    @app.post("/api/reviews")
    async def api_save_review(request: Request) -> JSONResponse:
        body = await _review_body(request)
        if len(body.note) > MAX_NOTE_CHARS:  # the store's cap, the same for review files
            raise ApiError(422, f"note: at most {MAX_NOTE_CHARS} characters "
                                f"(got {len(body.note):,})", "note")
        # the store is blocking: run it off the event loop, as FastAPI does for `def` routes
        row = await run_in_threadpool(_save, request, body)
        return _json(row)

    @app.get("/api/reviews")
    def api_reviews(request: Request, dataset: str | None = None) -> JSONResponse:
        name = _dataset(request, dataset)
        return _json({"dataset": name, "reviews": _store(request).reviews(name)})

    @app.get("/api/reviews/stats")
    def api_stats(request: Request, dataset: str | None = None) -> JSONResponse:
        name = _dataset(request, dataset)
        return _json({"dataset": name, "detectors": {
            s["detector"]: s for s in detector_stats(_store(request), name)}})


def _save(request: Request, body: ReviewIn) -> Any:
    name = _dataset(request, body.dataset)
    detector = _detector(request, name, body.detector)
    if detector is None:
        raise ApiError(422, "detector: name the detector whose flag this reviews", "detector")
    flagged = _store(request).flagged_example_ids(name, [detector])[detector]
    if body.example_id not in flagged:
        # a verdict on no flag would count towards no precision: refuse it, as the CLI does
        raise ApiError(422, f"example_id: {detector}'s latest run on {name!r} did not flag "
                            f"example {body.example_id} (it flagged {len(flagged):,} pairs, "
                            f"e.g. example ids {', '.join(map(str, sorted(flagged)[:5])) or 'none'}"
                            "): only a flag can be reviewed", "example_id")
    return _store(request).save_review(name, example_id=body.example_id, detector=detector,
                                       verdict=body.verdict, note=body.note,
                                       reviewer=body.reviewer or request.app.state.reviewer)
