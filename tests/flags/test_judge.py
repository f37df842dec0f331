"""llm_judge against a real OpenAI-compatible HTTP server on loopback (tests/openai_server.py).

The server's "oracle" judge knows the synthetic quality function, so on synthetic pairs the flips
it should find are known; the other models misbehave in one documented way each.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.synthetic import read_synthetic
from rewardlab.errors import SelectionError
from rewardlab.flags.detectors import DETECTORS, RULE_DETECTORS, get_detector
from rewardlab.flags.detectors.judge import (
    TEMPLATE_PATH,
    JudgeTemplate,
    LlmJudge,
    combine_verdicts,
)
from rewardlab.flags.detectors.judge_client import parse_judgement
from rewardlab.store.store import Store
from tests.openai_server import OpenAIServer, responses_of

N = 24  # pairs; 6 flipped


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(slow_seconds=2.0) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh(server: OpenAIServer) -> None:
    server.reset()
    server.key = None


@pytest.fixture(scope="module")
def pairs() -> list[PreferencePair]:
    return read_synthetic(f"synthetic:n={N},noise=0.25,seed=0", split="train").pairs


@pytest.fixture(scope="module")
def truth(pairs: list[PreferencePair]) -> np.ndarray:
    return np.array([p.meta["flipped"] for p in pairs])


def judge(server: OpenAIServer, models: str, **options: object) -> LlmJudge:
    settings: dict = {"progress": False, "backoff": 0.01, "retries": 2, **options}
    return LlmJudge(url=server.url, models=models, **settings)


def test_one_judge_finds_the_flips_asking_both_orders(server: OpenAIServer, pairs: list,
                                                      truth: np.ndarray) -> None:
    result = judge(server, "oracle").detect(pairs)
    np.testing.assert_array_equal(result.flagged, truth)
    # both orders of every pair, nothing else: 2N calls
    assert server.calls("oracle") == 2 * N
    shown = {(r.response_a, r.response_b) for r in server.requests}
    assert shown == {(p.chosen, p.rejected) for p in pairs} | {(p.rejected, p.chosen) for p in pairs}
    # confidence 0.9 in both orders: P(chosen better) = 0.95 or 0.05
    np.testing.assert_allclose(result.scores, np.where(truth, 0.95, 0.05))
    assert result.threshold == 0.5 and result.threshold_kind == "fixed"
    assert result.params["judged"] == N and result.params["unjudged"] == 0
    assert result.params["errors"] == {} and result.params["unparseable"] == {}
    assert result.reasons[int(np.flatnonzero(truth)[0])].startswith("1 of 1 judges prefer")
    assert all(r == "" for r, f in zip(result.reasons, result.flagged) if not f)


def test_several_judges_vote_and_order_disagreement_is_recorded(server: OpenAIServer, pairs: list,
                                                                truth: np.ndarray) -> None:
    result = judge(server, "oracle-a,oracle-b,contrarian,first").detect(pairs)
    # per pair: two oracles (0.95 / 0.05), the contrarian the mirror, "first" 0.5 (A both times)
    expected_p = np.where(truth, (0.05 + 0.05 + 0.95 + 0.5) / 4, (0.95 + 0.95 + 0.05 + 0.5) / 4)
    np.testing.assert_allclose(result.params["per_pair"]["p_chosen"], expected_p)
    np.testing.assert_array_equal(result.flagged, truth)
    assert result.params["per_pair"]["votes_rejected"] == np.where(truth, 2, 1).tolist()
    assert result.params["per_pair"]["n_judges"] == [4] * N
    # "first" picks A in both orders = a different reply each time, on every pair
    assert result.params["order_disagreements"] == {"oracle-a": 0, "oracle-b": 0,
                                                    "contrarian": 0, "first": N}
    assert result.params["per_pair"]["order_disagreements"] == [1] * N
    assert "changed their pick with the order" in result.reasons[int(np.flatnonzero(truth)[0])]
    assert server.calls() == 4 * 2 * N


def test_malformed_answers_are_counted_and_never_look_fine(server: OpenAIServer,
                                                           pairs: list) -> None:
    result = judge(server, "malformed").detect(pairs)
    bad = server.malformed_sent
    assert 0 < bad < 2 * N  # the server sent some prose, some JSON
    assert result.params["unparseable"] == {"malformed": bad}
    usage = result.params["usage"]["malformed"]
    assert usage["answers_new"] == 2 * N - bad and usage["http_requests"] == 2 * N
    # a pair with an unparseable order is unjudged: NaN score, not flagged, listed
    rows = result.params["unjudged_rows"]
    assert 0 < len(rows) == result.params["unjudged"] <= bad
    assert np.isnan(result.scores[rows]).all() and not result.flagged[rows].any()
    judged = np.setdiff1d(np.arange(N), rows)
    assert np.isfinite(result.scores[judged]).all()
    assert any("unparseable replies" in note for note in result.params["notes"])
    assert result.params["notes"][0].startswith(f"UNJUDGED: {len(rows)} of {N} pairs")


def test_429_and_500_are_retried_until_they_succeed(server: OpenAIServer, pairs: list,
                                                    truth: np.ndarray) -> None:
    result = judge(server, "flaky").detect(pairs)
    np.testing.assert_array_equal(result.flagged, truth)
    assert server.calls("flaky") == 2 * 2 * N  # every call failed once, then answered
    assert result.params["usage"]["flaky"]["http_requests"] == 4 * N
    assert result.params["errors"] == {} and result.params["unjudged"] == 0


def test_retry_after_is_honoured(server: OpenAIServer, pairs: list) -> None:
    result = judge(server, "retryafter", backoff=0.0).detect(pairs[:2])
    assert result.params["unjudged"] == 0
    for key in {(r.response_a, r.response_b) for r in server.requests}:
        first, second = sorted(r.at for r in server.requests if (r.response_a, r.response_b) == key)
        assert second - first >= 0.95  # Retry-After: 1, although the backoff is 0


def test_a_permanently_failing_judge_is_counted(server: OpenAIServer, pairs: list,
                                                truth: np.ndarray) -> None:
    result = judge(server, "oracle,broken", retries=2).detect(pairs)
    assert result.params["errors"] == {"broken": {"http 500": 2 * N}}
    assert server.calls("broken") == 3 * 2 * N  # 1 attempt + 2 retries per call
    assert result.params["usage"]["broken"]["http_requests"] == 3 * 2 * N
    # the working judge still judges every pair, alone
    np.testing.assert_array_equal(result.flagged, truth)
    assert result.params["per_pair"]["n_judges"] == [1] * N
    assert result.params["partially_judged"] == N and result.params["unjudged"] == 0
    assert any("broken: 48 failed calls (http 500)" in note for note in result.params["notes"])


def test_slow_answers_time_out_and_are_counted(server: OpenAIServer, pairs: list) -> None:
    result = judge(server, "slow", timeout=0.3, retries=1, concurrency=8).detect(pairs[:4])
    assert result.params["errors"] == {"slow": {"timeout": 8}}
    assert server.calls("slow") == 16  # every call tried twice
    assert np.isnan(result.scores).all() and not result.flagged.any()
    assert result.params["unjudged"] == 4 and result.params["unjudged_rows"] == [0, 1, 2, 3]


def test_unknown_model_stops_after_the_first_404(server: OpenAIServer, pairs: list) -> None:
    result = judge(server, "nosuchmodel", concurrency=1).detect(pairs)
    assert server.calls("nosuchmodel") == 1  # the rest would fail the same way: not sent
    assert result.params["errors"]["nosuchmodel"] == {"http 404": 1, "skipped": 2 * N - 1}
    assert result.params["unjudged"] == N


def test_a_rerun_is_served_from_the_store_cache(server: OpenAIServer, pairs: list,
                                                truth: np.ndarray, db_url: str) -> None:
    with Store(db_url) as store:
        first = judge(server, "oracle,malformed", store=store).detect(pairs)
        calls = server.calls()
        assert calls == 2 * 2 * N
        second = judge(server, "oracle,malformed", store=store).detect(pairs)
        # the cached answers cost nothing; only the unparseable ones are asked again
        assert server.calls() - calls == first.params["unparseable"]["malformed"]
        np.testing.assert_array_equal(second.scores, first.scores)
        assert second.params["usage"]["oracle"] == {
            "http_requests": 0, "answers_new": 0, "answers_cached": 2 * N, "prompt_tokens": 0,
            "completion_tokens": 0, "cost": None}
        server.reset()
        judge(server, "oracle", store=store).detect(pairs)
        assert server.calls() == 0  # a re-run makes no HTTP call at all
        judge(server, "oracle", store=store, temperature=0.7).detect(pairs[:3])
        assert server.calls() == 6  # another template hash (settings differ): asked again


def test_the_key_goes_as_a_bearer_token_and_nowhere_else(server: OpenAIServer, pairs: list,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-test-1234567890"
    server.key = secret
    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    with caplog.at_level(logging.DEBUG):
        result = judge(server, "oracle,echokey", key_env="JUDGE_TEST_KEY").detect(pairs[:3])
    assert {r.authorization for r in server.requests} == {f"Bearer {secret}"}
    assert result.params["errors"] == {"echokey": {"http 400": 6}}
    # the server echoed the header in its error message: masked wherever it is shown
    shown = json.dumps(result.params) + " ".join(result.reasons) + caplog.text + repr(result)
    assert secret not in shown and "Bearer ***" in json.dumps(result.params["notes"])
    assert result.params["key_env"] == "JUDGE_TEST_KEY"


def test_a_wrong_key_stops_the_judge(server: OpenAIServer, pairs: list,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    server.key = "right"
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    result = judge(server, "oracle", concurrency=2).detect(pairs)
    assert server.calls() <= 4  # the calls already in flight, then none
    errors = result.params["errors"]["oracle"]
    assert errors["http 401"] >= 1 and sum(errors.values()) == 2 * N
    assert result.params["unjudged"] == N


def test_tokens_and_cost_are_summed(server: OpenAIServer, pairs: list) -> None:
    result = judge(server, "priced").detect(pairs[:5])
    usage = result.params["usage"]["priced"]
    assert usage["cost"] == pytest.approx(0.001 * 10)
    assert usage["completion_tokens"] == 10 * 4  # the server counts words of its reply
    template = JudgeTemplate.load()
    sent = [template.messages(p.prompt_text, *sides) for p in pairs[:5]
            for sides in ((p.chosen, p.rejected), (p.rejected, p.chosen))]
    assert usage["prompt_tokens"] == sum(len(m["content"].split()) for ms in sent for m in ms)
    assert any("cost 0.0100" in note for note in result.params["notes"])


def test_options_are_checked_when_the_detector_is_built(tmp_path: Path) -> None:
    with pytest.raises(SelectionError, match="needs the base URL"):
        LlmJudge(models="m")
    with pytest.raises(SelectionError, match="needs the base URL"):
        LlmJudge(url="localhost:8000", models="m")
    with pytest.raises(SelectionError, match="at least one judge model"):
        LlmJudge(url="http://127.0.0.1:9/v1", models=" , ")
    with pytest.raises(SelectionError, match="concurrency must be >= 1"):
        LlmJudge(url="http://127.0.0.1:9/v1", models="m", concurrency=0)
    bad = tmp_path / "t.md"
    bad.write_text("=== system ===\nx\n=== user ===\n{{conversation}} {{response_a}} {{oops}}\n")
    with pytest.raises(SelectionError, match=r"t\.md:4: unknown placeholder \{\{oops\}\}"):
        LlmJudge(url="http://127.0.0.1:9/v1", models="m", template=str(bad))
    bad.write_text("no sections here")
    with pytest.raises(SelectionError, match="expected one '=== system ===' line"):
        JudgeTemplate.load(bad)
    detector = get_detector("llm_judge", url="http://127.0.0.1:9/v1", models="a, b",
                            concurrency="3", threshold="0.6")
    assert isinstance(detector, LlmJudge) and detector.concurrency == 3
    assert detector.judges == ["a", "b"] and detector.params["url"] == "http://127.0.0.1:9/v1"
    assert "concurrency" not in detector.params and detector.params["threshold"] == 0.6
    assert DETECTORS["llm_judge"] is LlmJudge and "llm_judge" not in RULE_DETECTORS


def test_the_bundled_template_fills_each_placeholder_once() -> None:
    template = JudgeTemplate.load()
    assert template.path == TEMPLATE_PATH
    messages = template.messages("Human: hi", "reply {{response_b}}", "other")
    assert responses_of(messages) == ("reply {{response_b}}", "other")  # not expanded again
    assert "Human: hi" in messages[1]["content"] and messages[0]["role"] == "system"
    assert "{{" not in messages[0]["content"]
    # the documentation above the sections is not part of what is sent, nor of the hash
    assert "Format of this file" not in json.dumps(messages)


@pytest.mark.parametrize("reply, expected", [
    ('{"preferred": "A", "confidence": 0.8}', ("A", 0.8)),
    ('  {"preferred": "B", "confidence": 1, "reason": "safer"}\n', ("B", 1.0)),
    ('```json\n{"preferred": "B", "confidence": 0}\n```', ("B", 0.0)),
])
def test_parse_judgement_accepts_exactly_the_json_object(reply: str, expected: tuple) -> None:
    assert parse_judgement(reply) == expected


@pytest.mark.parametrize("reply", [
    "Response A is better.", 'A: {"preferred": "A", "confidence": 0.8}', '["A", 0.8]',
    '{"preferred": "a", "confidence": 0.8}', '{"preferred": "A"}',
    '{"preferred": "A", "confidence": 1.5}', '{"preferred": "A", "confidence": true}',
    '{"preferred": "A", "confidence": "high"}', "",
])
def test_parse_judgement_refuses_anything_else(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_judgement(reply)


def test_combine_verdicts_needs_both_orders() -> None:
    nan = np.nan
    p = np.array([[[0.9, 0.8], [0.9, nan], [nan, nan]],  # judge 1
                  [[0.1, 0.2], [0.7, 0.7], [nan, nan]]])  # judge 2: (J=2, N=3, 2)
    v = combine_verdicts(p)
    np.testing.assert_allclose(v["p_chosen"][:2], [0.5, 0.7])
    assert np.isnan(v["p_chosen"][2])
    assert v["n_judges"].tolist() == [2, 1, 0]
    assert v["votes_rejected"].tolist() == [1, 0, 0] and v["votes_chosen"].tolist() == [1, 1, 0]


def test_flag_cli_runs_the_judges_and_reports_what_failed(server: OpenAIServer, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from rewardlab.cli.main import main

    db = f"sqlite:///{tmp_path}/cli.db"
    with Store(db) as store:
        store.ingest("syn", read_synthetic(f"synthetic:n={N},noise=0.25,seed=0"))
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-cli-secret")
    argv = ["flag", "syn", "--detectors", "llm_judge", "--db", db, "--judge-url", server.url,
            "--judge-model", "oracle,broken", "--judge-retries", "0", "--judge-key-env",
            "MY_JUDGE_KEY", "--judge-concurrency", "2"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    train = len(Store(db).load_pairs("syn", split="train"))
    assert f"llm_judge: broken: {2 * train} failed calls (http 500)" in out
    assert "llm_judge: oracle: " in out and "sk-cli-secret" not in out
    assert {r.authorization for r in server.requests} == {"Bearer sk-cli-secret"}
    server.reset()
    assert main([*argv, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert server.calls("oracle") == 0  # answered from the store's cache
    assert any("0 new answers" in n for n in document["notes"]["llm_judge"])
    with Store(db) as store:
        run = store.latest_runs("syn")["llm_judge"]
        assert run["params"]["models"] == ["oracle", "broken"] and "key" not in run["params"]
    capsys.readouterr()
    assert main(["flag", "syn", "--db", db, "--judge-url", server.url]) == 2
    assert "which is not being run" in capsys.readouterr().err
    assert main(["flag", "syn", "--db", db, "--detectors", "llm_judge"]) == 2
    assert "--judge-url" in capsys.readouterr().err
