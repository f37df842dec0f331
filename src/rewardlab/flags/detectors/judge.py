"""LLM judges behind any OpenAI-compatible endpoint: which reply is better, asked in both orders.

For every pair and judge model the detector sends the template (`judge_template.md`, the prompt and
rubric) twice: chosen reply as Response A, then as Response B. A reply must be exactly the JSON
object {"preferred": "A"|"B", "confidence": c}; it gives P(chosen better) = 0.5 ± c/2. A judge's
verdict on a pair is the mean over the two orders, so a fixed preference for one position cancels;
when the two orders prefer different replies that is an order disagreement, counted per pair and
judge. Several judges (`models="a,b"`) vote with their verdicts:

    score = 1 − mean over judges of P(chosen better)      flagged ⇔ score > threshold (0.5)

Nothing unknown passes as fine: a call that fails (HTTP error after retries, timeout, a malformed
HTTP reply, a model stopped after 401/403/404 or a redirect) or whose reply does not parse is
counted per judge and kind, a judge counts for a pair only with both orders answered, and a pair
no judge answered is unjudged: score NaN (stored as NULL), not flagged, listed in
`params["unjudged_rows"]` and counted in the notes `rewardlab flag` prints. Parsed answers are
cached in the store by (model, template hash, pair hash), so a re-run sends only what failed
before. Tokens (and cost, when the endpoint reports `usage.cost`) are logged and kept in
`params["usage"]`. The API key is read from the environment variable `key_env` when the run
starts and is never logged, stored or shown: every text from a server (error messages,
unparseable replies, a redirect's Location) is masked before it is cut short and again after,
and the URL may not carry a user name or password.

>>> judge = LlmJudge(url="http://localhost:11434/v1", models="llama3.1,qwen2.5")  # doctest: +SKIP
>>> result = judge.detect(train_pairs)                                          # doctest: +SKIP
>>> result.params["unjudged"], result.params["errors"]                          # doctest: +SKIP
(0, {})
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
from tqdm.auto import tqdm

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError
from rewardlab.flags.detectors.base import RUNTIME, Detector, DetectorResult, reasons_where
from rewardlab.flags.detectors.judge_client import ChatClient, ChatError, ChatReply, parse_judgement

if TYPE_CHECKING:
    from rewardlab.store.records import JudgeAnswerRow
    from rewardlab.store.store import Store

__all__ = ["TEMPLATE_PATH", "JudgeTemplate", "LlmJudge", "check_judge_url", "combine_verdicts",
           "order_disagreements"]

log = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).with_name("judge_template.md")
PLACEHOLDERS = ("conversation", "response_a", "response_b")
_SECTION = re.compile(r"^=== (system|user) ===[ \t]*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_SAVE_EVERY = 100  # answers per cache write: an interrupted run keeps what it paid for
_USERINFO = re.compile(r"^([^/?#]*//)?[^/?#]*@")  # "user:password@" before the host


def check_judge_url(url: str) -> None:
    """SelectionError unless `url` is an http(s) base URL without user name or password (a
    password in the URL would be printed and stored with the run, and the key belongs in the
    environment); the message never repeats what came before the '@'.

    >>> check_judge_url("http://user:pw@127.0.0.1:8000/v1")
    Traceback (most recent call last):
    ...
    rewardlab.errors.SelectionError: llm_judge: --judge-url must not contain a user name or \
password (http://***@127.0.0.1:8000/v1): give the API key in the environment variable \
--judge-key-env names
    """
    shown = _USERINFO.sub(lambda m: (m.group(1) or "") + "***@", url)
    if shown != url:
        raise SelectionError(f"llm_judge: --judge-url must not contain a user name or password "
                             f"({shown}): give the API key in the environment variable "
                             "--judge-key-env names")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (the property raises on a port that is not a number)
    except ValueError as e:  # "Port out of range 0-65535", "Invalid IPv6 URL", …
        raise SelectionError(f"llm_judge: --judge-url {url!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SelectionError(f"llm_judge needs the base URL of an OpenAI-compatible API "
                             f"(--judge-url), e.g. http://localhost:11434/v1; got {url or 'none'!r}")


@dataclass(frozen=True)
class JudgeTemplate:
    """The two messages of `judge_template.md` (or a user's copy); see that file for the format."""

    path: Path
    system: str
    user: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> JudgeTemplate:
        """Read and check a template; SelectionError naming the file (and line) if it is wrong."""
        path = Path(path) if path else TEMPLATE_PATH
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SelectionError(f"{path}: cannot read the llm_judge template: {e}") from None
        marks = list(_SECTION.finditer(text))
        if [m.group(1) for m in marks] != ["system", "user"]:
            raise SelectionError(f"{path}: expected one '=== system ===' line, then one "
                                 f"'=== user ===' line (found {len(marks)} section lines)")
        system = text[marks[0].end():marks[1].start()].strip("\n")
        user = text[marks[1].end():].strip("\n")
        for name in sorted({m.group(1) for m in _PLACEHOLDER.finditer(system + user)}
                           - set(PLACEHOLDERS)):
            line = text.count("\n", 0, text.index("{{" + name + "}}")) + 1
            raise SelectionError(f"{path}:{line}: unknown placeholder {{{{{name}}}}}; "
                                 f"placeholders: {', '.join(PLACEHOLDERS)}")
        missing = [p for p in PLACEHOLDERS if "{{" + p + "}}" not in system + user]
        if missing:
            raise SelectionError(f"{path}: the template never uses {{{{{missing[0]}}}}}; "
                                 f"it needs {', '.join(PLACEHOLDERS)}")
        return cls(path=path, system=system, user=user)

    def digest(self, **settings: Any) -> str:
        """sha256 of what a judge is sent: the two messages and the generation `settings`."""
        payload = json.dumps([self.system, self.user, settings], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def messages(self, conversation: str, response_a: str, response_b: str) -> list[dict[str, str]]:
        """The chat messages for one order of one pair (placeholders replaced in one pass)."""
        values = {"conversation": conversation, "response_a": response_a,
                  "response_b": response_b}

        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)

        return [{"role": "system", "content": fill(self.system)},
                {"role": "user", "content": fill(self.user)}]


def _pair_hash(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode("utf-8",
                                                                          "surrogatepass")).hexdigest()


def _p_chosen(preferred: str, confidence: float, order: int) -> float:
    """P(chosen better) from one answer; order 0 shows the chosen reply as A, order 1 as B."""
    picked_chosen = (preferred == "A") == (order == 0)
    return 0.5 + 0.5 * confidence if picked_chosen else 0.5 - 0.5 * confidence


def combine_verdicts(p: np.ndarray) -> dict[str, np.ndarray]:
    """(J, N, 2) P(chosen better) per judge, pair and order (NaN: no answer) → per pair:

    p_chosen (mean over the judges that answered both orders; NaN if none), n_judges,
    votes_rejected / votes_chosen (judges whose two-order mean is below / above 0.5) and
    order_disagreements (judges whose two orders preferred different replies).

    >>> combine_verdicts(np.array([[[0.9, 0.8]], [[0.9, 0.1]]]))["p_chosen"].round(2).tolist()
    [0.68]
    """
    both = ~np.isnan(p).any(axis=2)  # (J, N)
    verdict = np.where(both, p.mean(axis=2), 0.5)  # (J, N) 0.5 = no vote either way
    n_judges = both.sum(axis=0)  # (N,)
    total = np.where(both, verdict, 0.0).sum(axis=0)
    p_chosen = np.divide(total, n_judges, out=np.full(n_judges.shape, np.nan),
                         where=n_judges > 0)
    return {"p_chosen": p_chosen, "n_judges": n_judges,
            "votes_rejected": (verdict < 0.5).sum(axis=0),
            "votes_chosen": (verdict > 0.5).sum(axis=0),
            "order_disagreements": order_disagreements(p).sum(axis=0)}


def order_disagreements(p: np.ndarray) -> np.ndarray:
    """(J, N) True where a judge answered both orders and preferred a different reply in each
    (the same letter twice: a position bias, not a judgement)."""
    with np.errstate(invalid="ignore"):  # NaN compares False: no answer, no disagreement
        return np.asarray((p[..., 0] - 0.5) * (p[..., 1] - 0.5) < 0)


@dataclass
class _Tally:
    """What one judge model cost and what went wrong, for params, notes and the log."""

    answers_new: int = 0
    answers_cached: int = 0
    http_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    errors: Counter[str] = field(default_factory=Counter)
    unparseable: int = 0
    examples: dict[str, str] = field(default_factory=dict)  # kind -> first message

    def spent(self, reply: ChatReply) -> None:
        self.http_requests += reply.attempts
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        if reply.cost is not None:
            self.cost = (self.cost or 0.0) + reply.cost

    def failed(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.examples.setdefault(kind, message)

    def usage(self) -> dict[str, Any]:
        return {"http_requests": self.http_requests, "answers_new": self.answers_new,
                "answers_cached": self.answers_cached, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost": self.cost}


@dataclass
class LlmJudge(Detector):
    """Judge models at an OpenAI-compatible `url` vote on every pair, asked in both orders."""

    name = "llm_judge"
    kind = "model"
    description = "LLM judges, asked in both orders, prefer the rejected reply"
    url: str = ""  # base URL: POST {url}/chat/completions
    models: str = ""  # judge model names, comma-separated: several judges vote
    key_env: str = "OPENAI_API_KEY"  # environment variable holding the API key (unset: no key)
    template: str = ""  # prompt and rubric file; "": the bundled judge_template.md
    threshold: float = 0.5  # flagged ⇔ 1 − mean P(chosen better) > threshold
    max_tokens: int = 100
    temperature: float = 0.0
    concurrency: int = field(default=4, metadata=RUNTIME)  # requests in flight
    timeout: float = field(default=60.0, metadata=RUNTIME)  # deadline per HTTP request, whole
    retries: int = field(default=4, metadata=RUNTIME)  # on 429, 5xx, timeouts, drops, bad HTTP
    backoff: float = field(default=1.0, metadata=RUNTIME)  # first retry wait, doubled each time
    store: Store | None = field(default=None, metadata=RUNTIME)  # the answer cache (None: none)
    progress: bool = field(default=True, metadata=RUNTIME)

    def __post_init__(self) -> None:
        # checked when built: `rewardlab flag` refuses a bad option before any detector runs
        check_judge_url(self.url)
        if not self.judges:
            raise SelectionError("llm_judge needs at least one judge model (--judge-model NAME[,NAME…])")
        problem = ("threshold must be in [0, 1)" if not 0.0 <= self.threshold < 1.0 else
                   "concurrency must be >= 1" if self.concurrency < 1 else
                   "timeout must be in (0, 86400] seconds" if not 0 < self.timeout <= 86400 else
                   "retries must be >= 0" if self.retries < 0 else
                   "max_tokens must be >= 1" if self.max_tokens < 1 else
                   "backoff must be >= 0" if not self.backoff >= 0 else "")
        if problem:
            raise SelectionError(f"llm_judge: {problem}")
        self._template = JudgeTemplate.load(self.template or None)

    @property
    def judges(self) -> list[str]:
        return list(dict.fromkeys(m.strip() for m in self.models.split(",") if m.strip()))

    @property
    def params(self) -> dict[str, Any]:
        own = super().params
        own.update(url=self.url, models=self.judges,
                   template=str(self._template.path) if self.template else "bundled",
                   template_hash=self._digest())
        return own

    def _digest(self) -> str:
        return self._template.digest(max_tokens=self.max_tokens, temperature=self.temperature)

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        client = ChatClient(self.url, key=os.environ.get(self.key_env) or None, timeout=self.timeout,
                            retries=self.retries, backoff=self.backoff)
        calls = [[self._template.messages(p.prompt_text, *((p.chosen, p.rejected) if order == 0
                                                            else (p.rejected, p.chosen)))
                  for order in (0, 1)] for p in train]
        keys = [[_pair_hash(m) for m in pair] for pair in calls]  # (N, 2)
        tallies = {judge: _Tally() for judge in self.judges}
        answers = {judge: self._cached(judge, {k for pair in keys for k in pair}, tallies[judge])
                   for judge in self.judges}
        jobs = {(judge, key): messages for judge in self.judges
                for pair_keys, pair_calls in zip(keys, calls)
                for key, messages in zip(pair_keys, pair_calls) if key not in answers[judge]}
        self._ask(client, jobs, answers, tallies)
        p = np.full((len(self.judges), len(train), 2), np.nan)  # (J, N, 2)
        for j, judge in enumerate(self.judges):
            for i, pair_keys in enumerate(keys):
                for order, key in enumerate(pair_keys):
                    if key in answers[judge]:
                        p[j, i, order] = _p_chosen(*answers[judge][key], order)
        for judge, tally in tallies.items():
            _log_usage(judge, tally)
        result = self._result(p, tallies)
        # the texts in params came masked from the client; this sweep also covers the URL and
        # model names, in case someone put the key there: params are printed and stored
        result.params = _masked(result.params, client.mask)
        return result

    # ---- calls and the cache --------------------------------------------------------------

    def _cached(self, judge: str, keys: set[str], tally: _Tally) -> dict[str, tuple[str, float]]:
        if self.store is None:
            return {}
        rows = self.store.judge_answers(judge, self._digest(), sorted(keys))
        tally.answers_cached = len(rows)
        return {k: (r["preferred"], r["confidence"]) for k, r in rows.items()}

    def _ask(self, client: ChatClient, jobs: dict[tuple[str, str], list[dict[str, str]]],
             answers: dict[str, dict[str, tuple[str, float]]], tallies: dict[str, _Tally]) -> None:
        """Send `jobs` ((judge, pair hash) → messages) at most `concurrency` at a time; record
        each outcome as it arrives and write parsed answers to the cache every few."""
        unsaved: dict[str, dict[str, JudgeAnswerRow]] = {judge: {} for judge in tallies}
        pending: dict[Future[ChatReply], tuple[str, str]] = {}
        todo = iter(jobs.items())
        with (ThreadPoolExecutor(max_workers=self.concurrency) as pool,
              tqdm(total=len(jobs), desc="llm_judge calls", unit="call",
                   disable=not self.progress) as bar):
            for (judge, key), messages in _take(todo, 2 * self.concurrency):
                pending[pool.submit(self._complete, client, judge, messages)] = (judge, key)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    judge, key = pending.pop(future)
                    self._record(client, future, judge, key, answers, tallies[judge],
                                 unsaved[judge])
                    bar.update()
                for (judge, key), messages in _take(todo, len(done)):
                    pending[pool.submit(self._complete, client, judge, messages)] = (judge, key)
                if sum(map(len, unsaved.values())) >= _SAVE_EVERY:
                    self._save(unsaved)
        self._save(unsaved)

    def _complete(self, client: ChatClient, judge: str, messages: list[dict[str, str]]) -> ChatReply:
        return client.complete(judge, messages, max_tokens=self.max_tokens,
                               temperature=self.temperature)

    def _record(self, client: ChatClient, future: Future[ChatReply], judge: str, key: str,
                answers: dict[str, dict[str, tuple[str, float]]], tally: _Tally,
                unsaved: dict[str, JudgeAnswerRow]) -> None:
        try:
            reply = future.result()
        except ChatError as e:
            tally.http_requests += e.attempts
            tally.failed(e.kind, e.message)
            return
        tally.spent(reply)
        try:
            preferred, confidence = parse_judgement(reply.content)
        except ValueError as e:
            tally.unparseable += 1
            # the reply may echo the request's headers: masked before and after the cut
            tally.examples.setdefault("unparseable", f"{e}: {client.shown(reply.content, 120)!r}")
            return
        tally.answers_new += 1
        answers[judge][key] = (preferred, confidence)
        unsaved[key] = {"preferred": preferred, "confidence": confidence,
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens, "cost": reply.cost}

    def _save(self, unsaved: dict[str, dict[str, JudgeAnswerRow]]) -> None:
        for judge, rows in unsaved.items():
            if rows and self.store is not None:
                self.store.save_judge_answers(judge, self._digest(), rows)
            rows.clear()

    # ---- result ---------------------------------------------------------------------------

    def _result(self, p: np.ndarray, tallies: dict[str, _Tally]) -> DetectorResult:
        v = combine_verdicts(p)
        score = 1.0 - v["p_chosen"]  # (N,) NaN where unjudged
        judged = v["n_judges"] > 0
        flagged = judged & (np.nan_to_num(score, nan=0.0) > self.threshold)

        def reason(i: int) -> str:
            disagree = int(v["order_disagreements"][i])
            return (f"{v['votes_rejected'][i]} of {v['n_judges'][i]} judges prefer the rejected "
                    f"reply (mean P(chosen better) {v['p_chosen'][i]:.2f} over both orders"
                    + (f"; {disagree} judge(s) changed their pick with the order)" if disagree
                       else ")"))

        result = self.result(score, flagged, reasons_where(flagged, reason),
                             threshold=self.threshold, threshold_kind="fixed")
        unjudged = np.flatnonzero(~judged)
        result.params.update({
            "rule": "1 - mean P(chosen better) over judges > threshold; both orders per judge",
            "judged": int(judged.sum()), "unjudged": int(unjudged.size),
            "unjudged_rows": unjudged.tolist(),
            "partially_judged": int((judged & (v["n_judges"] < len(self.judges))).sum()),
            "order_disagreements": dict(zip(self.judges,
                                            order_disagreements(p).sum(axis=1).tolist())),
            "errors": {j: dict(t.errors) for j, t in tallies.items() if t.errors},
            "unparseable": {j: t.unparseable for j, t in tallies.items() if t.unparseable},
            "usage": {j: t.usage() for j, t in tallies.items()},
            "per_pair": {key: v[key].tolist() for key in
                         ("p_chosen", "n_judges", "votes_rejected", "order_disagreements")},
            "notes": _notes(len(score), int(unjudged.size), tallies)})
        return result


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    """`value` (JSON-like: dicts, lists, strings, numbers) with `mask` applied to every string."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {_masked(k, mask): _masked(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    return value


def _take(items: Iterable[Any], count: int) -> list[Any]:
    """The next `count` items of an iterator (fewer at its end)."""
    taken = []
    for item in items:
        taken.append(item)
        if len(taken) >= count:
            break
    return taken


def _log_usage(judge: str, tally: _Tally) -> None:
    cost = "" if tally.cost is None else f", cost {tally.cost:.4f}"
    log.info("llm_judge %s: %d new answers, %d from the cache, %d HTTP requests, %d prompt + %d "
             "completion tokens%s; %d failed calls, %d unparseable replies", judge,
             tally.answers_new, tally.answers_cached, tally.http_requests, tally.prompt_tokens,
             tally.completion_tokens, cost, sum(tally.errors.values()), tally.unparseable)


def _notes(n: int, unjudged: int, tallies: dict[str, _Tally]) -> list[str]:
    """The lines `rewardlab flag` prints under its table: errors first, never hidden."""
    notes = []
    if unjudged:
        notes.append(f"UNJUDGED: {unjudged:,} of {n:,} pairs got no judge's answer in both orders "
                     "(score NaN, not flagged; params['unjudged_rows'] lists them)")
    for judge, t in tallies.items():
        cost = "" if t.cost is None else f", cost {t.cost:.4f}"
        notes.append(f"{judge}: {t.answers_new:,} new answers + {t.answers_cached:,} cached, "
                     f"{t.http_requests:,} HTTP requests, {t.prompt_tokens:,} prompt + "
                     f"{t.completion_tokens:,} completion tokens{cost}")
        for kind, count in sorted(t.errors.items()):
            notes.append(f"{judge}: {count:,} failed calls ({kind}), e.g. {t.examples[kind]}")
        if t.unparseable:
            notes.append(f"{judge}: {t.unparseable:,} unparseable replies, e.g. "
                         f"{t.examples['unparseable']}")
    return notes

