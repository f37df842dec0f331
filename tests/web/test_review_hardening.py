"""Hostile inputs to the review surfaces (issue 27 items 5, 9, 10, 20; issue 35 items 2 and 6):
the login redirect stays on this server, the review API answers JSON 4xx (never a plain-text 500)
on SQLite and PostgreSQL, `reviews import` ends in one FILE:LINE line and saves nothing, a verdict
needs a flag (API, CLI, files), and cards of dialogues that did not parse show what is there."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
import pytest
from _review_seed import LENGTH_FLAGGED, seed_store

from rewardlab.cli.main import main
from rewardlab.data.pairs import pair_from_hh
from rewardlab.data.source_result import SourceResult
from rewardlab.errors import SourceError
from rewardlab.flags.flagging import import_flagged_indices
from rewardlab.flags.review_files import import_reviews
from rewardlab.store.records import DetectorResult
from rewardlab.store.review_sql import MAX_NOTE_CHARS
from rewardlab.store.store import Store
from rewardlab.web.review import ReviewConfig, create_review_app
from rewardlab.web.server import background_server

TOKEN = "s3cret-token"
UNFLAGGED = 25  # length_ratio flags train pairs 0..23 only (see _review_seed)


def _serve(store: Store, **kw: object) -> Iterator[str]:
    app = create_review_app(store, ReviewConfig(reviewer="tester"), **kw)  # type: ignore[arg-type]
    with background_server(app) as base:
        yield base


@pytest.fixture
def client(store: Store, ids: list[int]) -> Iterator[httpx.Client]:
    for base in _serve(store):
        with httpx.Client(base_url=base, timeout=60) as opened:
            yield opened


# ---- item 5: the login redirect ------------------------------------------------------------------

def _raw_get(base: str, target: str) -> http.client.HTTPResponse:
    """GET `target` exactly as written (httpx would read `//evil.com/` as another host)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    conn.request("GET", target)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.parametrize("target", [
    "//evil.com/?token=T", "///evil.com/x?token=T", "/%2F%2Fevil.com/?token=T",
    "/%5Cevil.com/?token=T", "/%2F%5Cevil.com?token=T", "//evil.com/queue?a=1&token=T"])
def test_the_login_redirect_stays_on_this_server(tmp_path: Path, target: str) -> None:
    with Store(f"sqlite:///{tmp_path}/t.db") as store:
        seed_store(store)
        for base in _serve(store, token=TOKEN):
            response = _raw_get(base, target.replace("token=T", f"token={TOKEN}"))
            assert response.status == 303
            location = response.getheader("location") or ""
            # a browser resolves the Location against the page: it must land on this host
            landed = urlsplit(urljoin(base + "/queue", location))
            assert (landed.scheme, landed.netloc) == ("http", urlsplit(base).netloc), location
            assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
            assert TOKEN not in location
            assert "evil.com" in landed.path  # the path kept, as a path on this server
            assert "rewardlab_review=" in (response.getheader("set-cookie") or "")


def test_an_ordinary_login_keeps_its_path_and_query(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/t.db") as store:
        seed_store(store)
        for base in _serve(store, token=TOKEN):
            response = _raw_get(base, f"/queue?detector=oof_margin&token={TOKEN}&state=all")
            assert (response.status, response.getheader("location")) == (
                303, "/queue?detector=oof_margin&state=all")


# ---- item 10: JSON 4xx, never a plain-text 500 -----------------------------------------------------

def _body(ids: list[int], **extra: object) -> dict[str, object]:
    return {"dataset": "rev", "example_id": ids[0], "detector": "length_ratio", "verdict": "tp",
            **extra}


def _json_error(response: httpx.Response, status: int, field: str | None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert payload["field"] == field, payload
    return str(payload["error"])


@pytest.mark.parametrize("example_id", [2**31, 10**30, 2**63])
def test_an_out_of_range_example_id_is_a_422(client: httpx.Client, store: Store, ids: list[int],
                                            example_id: int) -> None:
    response = client.post("/api/reviews", json=_body(ids, example_id=example_id))
    assert "less than or equal to 2147483647" in _json_error(response, 422, "example_id")
    assert store.reviews("rev") == []


def test_an_out_of_range_offset_is_a_422(client: httpx.Client) -> None:
    for offset in ("9223372036854775808", str(2**31)):
        response = client.get("/api/flags", params={"offset": offset})
        assert "offset" in _json_error(response, 422, "offset")
        page = client.get("/queue", params={"offset": offset})
        assert page.status_code == 422 and "offset" in page.text  # the HTML error page
    last = client.get("/api/flags", params={"offset": str(2**31 - 1)})
    assert (last.status_code, last.json()["items"]) == (200, [])


def test_a_nul_character_is_a_422_on_both_backends(client: httpx.Client, store: Store,
                                                   ids: list[int]) -> None:
    for field in ("note", "reviewer"):
        response = client.post("/api/reviews", json=_body(ids, **{field: "a\x00b"}))
        assert "NUL" in _json_error(response, 422, field)
    response = client.get("/api/flags", params={"reviewer": "a\x00b", "state": "unreviewed"})
    assert "NUL" in _json_error(response, 422, "reviewer")
    assert store.reviews("rev") == []


def test_a_verdict_on_a_pair_the_detector_did_not_flag_is_refused(
        client: httpx.Client, store: Store, ids: list[int]) -> None:
    for example_id, detector in ((ids[UNFLAGGED], "length_ratio"), (ids[0], "oof_margin")):
        response = client.post("/api/reviews", json=_body(ids, example_id=example_id,
                                                         detector=detector))
        error = _json_error(response, 422, "example_id")
        assert f"did not flag example {example_id}" in error
        assert "only a flag can be reviewed" in error
    flagged = _body(ids, example_id=ids[20], detector="oof_margin")
    assert client.post("/api/reviews", json=flagged).status_code == 200
    assert [(r["source_index"], r["detector"]) for r in store.reviews("rev")] == [
        (20, "oof_margin")]


def test_notes_have_one_cap_in_the_api_and_in_files(client: httpx.Client, store: Store,
                                                    ids: list[int], tmp_path: Path) -> None:
    assert MAX_NOTE_CHARS == 10_000
    at_cap = client.post("/api/reviews", json=_body(ids, note="x" * MAX_NOTE_CHARS))
    assert at_cap.status_code == 200, at_cap.text
    over = client.post("/api/reviews", json=_body(ids, note="x" * (MAX_NOTE_CHARS + 1)))
    assert "at most 10000 characters" in _json_error(over, 422, "note")
    path = tmp_path / "r.jsonl"
    row = {"detector": "length_ratio", "subset": "harmless-base", "source_index": 1,
           "verdict": "fp", "reviewer": "ann"}
    path.write_text(json.dumps({**row, "note": "y" * MAX_NOTE_CHARS}) + "\n"
                    + json.dumps({**row, "source_index": 2, "note": "y" * 2_000_000}) + "\n")
    with pytest.raises(SourceError, match=r"r.jsonl:2: note of 2,000,000 characters; at most "
                                          r"10,000"):
        import_reviews(store, "rev", path)
    assert len(store.reviews("rev")) == 1  # the API's review; nothing of the file
    page = client.get("/queue", params={"state": "all"}).text
    assert f'maxlength="{MAX_NOTE_CHARS}"' in page  # the form says the same cap


# ---- items 9 and 20: review files ------------------------------------------------------------------

GOOD = {"detector": "length_ratio", "subset": "harmless-base", "source_index": 0, "verdict": "tp",
        "reviewer": "ann"}


def _task(data: dict[str, object], result: list[object]) -> dict[str, object]:
    return {"data": {"detector": "length_ratio", "subset": "harmless-base", "source_index": 3,
                     **data}, "annotations": [{"completed_by": 7, "result": result}]}


def _choice(choices: object) -> dict[str, object]:
    return {"from_name": "verdict", "to_name": "prompt", "type": "choices",
            "value": {"choices": choices}}


def _text(text: object) -> dict[str, object]:
    return {"from_name": "note", "to_name": "prompt", "type": "textarea", "value": {"text": text}}


JSONL_CASES = [
    (b'{"detector": "length_ratio", "note": "caf\xe9"}', r"r.jsonl:2: not UTF-8 text \(byte 0xe9\)"),
    (b"[" * 100_000, r"r.jsonl:2: JSON nested more than 64 levels deep"),
    (json.dumps({**GOOD, "content_hash": ["x"]}).encode(),
     r"r.jsonl:2: field 'content_hash' must be a string \(got \['x'\]\)"),
    (json.dumps({**GOOD, "source_index": True}).encode(),
     r"r.jsonl:2: field 'source_index' must be a whole number >= 0 \(got True\)"),
    (json.dumps({**GOOD, "source_index": 1.0}).encode(), r"r.jsonl:2: field 'source_index'"),
    (json.dumps({**GOOD, "note": "a\x00b"}).encode(), r"r.jsonl:2: note must not contain a NUL"),
    (json.dumps({**GOOD, "reviewer": "a\x00b"}).encode(),
     r"r.jsonl:2: field 'reviewer' must be at most 200 characters without a NUL"),
    (json.dumps({**GOOD, "reviewer": "r" * 201}).encode(), r"r.jsonl:2: field 'reviewer'"),
    (json.dumps({**GOOD, "split": 1}).encode(), r"r.jsonl:2: field 'split' must be a string"),
    (json.dumps({**GOOD, "reviews": {"a": 1}}).encode(), r"r.jsonl:2: expected 'reviews'"),
    (b"1" * 5000, r"r.jsonl:2: not valid JSON: Exceeds the limit"),
    (json.dumps({**GOOD, "source_index": UNFLAGGED}).encode(),
     rf"r.jsonl:2: length_ratio's latest run did not flag train pair {UNFLAGGED} of 'rev', and "
     rf"only a flag can be reviewed \(it flagged {LENGTH_FLAGGED} pairs, e.g. train #0, train #1, "
     r"train #2, train #3, train #4, …\)"),
]


@pytest.mark.parametrize(("bad", "message"), JSONL_CASES,
                         ids=[f"jsonl-{i}" for i in range(len(JSONL_CASES))])
def test_a_hostile_jsonl_line_is_one_error_naming_the_line(
        store: Store, ids: list[int], tmp_path: Path, bad: bytes, message: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + bad + b"\n")
    with pytest.raises(SourceError, match=message):
        import_reviews(store, "rev", path)
    assert store.reviews("rev") == []  # the good first line was not saved either


LABEL_STUDIO_CASES = [
    ([_task({}, [_choice({"a": 1})])],
     r"export.json:3 \(task 2\): the verdict's 'choices' must be a list of strings"),
    ([_task({}, [_choice(["tp", "fp"])])], r"\(task 2\): more than one verdict chosen \(fp, tp\)"),
    ([_task({}, [_choice(["tp"]), _text({"a": 1})])],
     r"\(task 2\): field 'note' must be a string"),
    ([_task({}, [_choice(["tp"]), _text(["a\x00"])])], r"\(task 2\): note must not contain a NUL"),
    ([_task({"source_index": True}, [_choice(["tp"])])], r"\(task 2\): field 'source_index'"),
    ([{"data": {"detector": "length_ratio"}, "annotations": 5}],
     r"\(task 2\): 'annotations' must be a list"),
    ([_task({}, {"a": 1})], r"\(task 2\): an annotation's 'result' must be a list"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("tasks", "message"), LABEL_STUDIO_CASES,
                         ids=[f"labelstudio-{i}" for i in range(len(LABEL_STUDIO_CASES))])
def test_a_hostile_label_studio_task_is_one_error_naming_its_line(
        store: Store, ids: list[int], tmp_path: Path, tasks: list[object], message: str) -> None:
    good = _task({"source_index": 0}, [_choice(["tp"])])
    path = tmp_path / "export.json"
    # one task per line, as "[\n<task 1>,\n<task 2>\n]": task 2 starts on line 3
    path.write_text("[\n" + ",\n".join(json.dumps(t) for t in [good, *tasks]) + "\n]\n")
    with pytest.raises(SourceError, match=message):
        import_reviews(store, "rev", path)
    assert store.reviews("rev") == []


def test_broken_label_studio_files_name_their_line(store: Store, ids: list[int],
                                                   tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    task = json.dumps(_task({"source_index": 0}, [_choice(["tp"])])).encode()
    cases = [
        (b'[\n{"data": {}},\n{"data": "caf\xe9"}\n]', r"export.json:3: not UTF-8 text"),
        (b"[\n" + b"[" * 100_000, r"export.json:2: JSON nested more than 64 levels deep"),
        (b"[\n" + task + b"\n" + task + b"\n]", r"export.json:3: not valid JSON: expected ',' or"),
        (b'{"data": {}}', r"export.json:1: expected a JSON list of Label Studio tasks"),
        (b"[]\n[]", r"export.json:2: not valid JSON: extra data after the list"),
        (b"", r"export.json:1: expected a JSON list"),
    ]
    for content, message in cases:
        path.write_bytes(content)
        with pytest.raises(SourceError, match=message):
            import_reviews(store, "rev", path)
    assert store.reviews("rev") == []


def test_a_label_studio_note_given_as_one_string_is_kept_whole(store: Store, ids: list[int],
                                                              tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps([
        _task({}, [_choice(["fp"]), _text("hello")]),
        _task({"source_index": 4}, [_choice(["tp"]), _text(["two", "lines"])])]))
    assert import_reviews(store, "rev", path).saved == 2
    assert [(r["source_index"], r["note"]) for r in store.reviews("rev")] == [
        (3, "hello"), (4, "two\nlines")]


def test_rows_for_one_flag_and_reviewer_save_once_and_the_later_row_wins(
        store: Store, ids: list[int], tmp_path: Path) -> None:
    store.save_review("rev", example_id=ids[5], detector="length_ratio", verdict="tp",
                      reviewer="ann", note="before")
    rows = [{**GOOD, "verdict": "tp", "note": "first"},
            {**GOOD, "verdict": "fp", "note": "second"},  # same flag, same reviewer: replaces
            {**GOOD, "reviewer": "bob"},  # same flag, another reviewer: a review of its own
            {**GOOD, "source_index": 5, "verdict": "fp", "note": "after"}]  # edits ann's review
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = import_reviews(store, "rev", path)
    assert (counts.tasks, counts.saved, counts.new, counts.edited) == (4, 3, 2, 1)
    assert counts.superseded == [(f"{path}:1", f"{path}:2")]
    assert [(r["source_index"], r["reviewer"], r["verdict"], r["note"])
            for r in store.reviews("rev")] == [(5, "ann", "fp", "after"), (0, "ann", "fp", "second"),
                                               (0, "bob", "tp", "")]


def test_cli_import_says_what_happened_and_fails_in_one_line(
        store: Store, ids: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = store.url
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "verdict": "fp"}) + "\n")
    assert main(["reviews", "import", "rev", str(path), "--db", db]) == 0
    out = capsys.readouterr().out
    assert "imported 1 review(s)" in out and "(2 task(s) read): 1 new, 0 replacing" in out
    assert f"{path}:1: replaced by {path}:2 (same pair, detector and reviewer: the later row " \
           "wins)" in out
    for content in (b"\xff\xfe\n", b"[" * 100_000, b'{"detector": "length_ratio", '
                    b'"content_hash": ["x"], "verdict": "tp", "note": "a\\u0000"}'):
        path.write_bytes(content)
        assert main(["reviews", "import", "rev", str(path), "--db", db]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rewardlab: error: {path}:1: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert [r["verdict"] for r in store.reviews("rev")] == ["fp"]  # only the first import


# ---- issue 35 item 2: `flags review` needs a flag --------------------------------------------------

def test_cli_flags_review_refuses_a_pair_the_detector_did_not_flag(
        store: Store, ids: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    db = store.url
    assert main(["flags", "review", "rev", str(UNFLAGGED), "--detector", "length_ratio",
                 "--not-issue", "--db", db]) == 2
    err = capsys.readouterr().err
    assert (f"length_ratio's latest run on 'rev' did not flag train pair {UNFLAGGED}, and only a "
            f"flag can be reviewed; it flagged {LENGTH_FLAGGED} pairs, e.g. train #0, train #1, "
            "train #2") in err
    assert "train #9, …" in err and "`rewardlab flags show rev --detector length_ratio`" in err
    assert main(["flags", "review", "rev", "3", "--detector", "oof_margin", "--issue",
                 "--db", db]) == 2
    assert "it flagged 10 pairs, e.g. train #20" in capsys.readouterr().err
    assert main(["flags", "review", "rev", "0", "--detector", "length_ratio", "--split", "test",
                 "--issue", "--db", db]) == 2  # test pair 0 exists, but nothing flagged it
    assert "did not flag test pair 0" in capsys.readouterr().err
    assert store.reviews("rev") == []
    assert main(["flags", "review", "rev", "3", "--detector", "length_ratio", "--not-issue",
                 "--db", db]) == 0
    assert "pair 3 is a false positive of length_ratio" in capsys.readouterr().out
    assert main(["flags", "review", "rev", "4", "--detector", "length_ratio", "--issue",
                 "--note", "n" * 2_000_000, "--db", db]) == 2
    assert "note: at most 10000 characters (got 2,000,000)" in capsys.readouterr().err
    assert [r["source_index"] for r in store.reviews("rev")] == [3]


# ---- issue 35 item 6: cards of unparsed dialogues, imported flags ------------------------------------

BROKEN_CHOSEN = ("\n\nHuman: Are drag queens men?\n\nAssistant: No.  Human: Then why the name?"
                 "\n\nAssistant: Because <b>history</b>")
BROKEN_REJECTED = "\n\nHuman: Are drag queens men?\n\nAssistant: I don't know."


def _broken_pair_store(store: Store) -> None:
    """Dataset "raw": one pair whose chosen dialogue ends in two assistant turns (no prompt
    found), flagged by length_ratio; its pairs flagged again by an imported list, `notebook`."""
    pair = pair_from_hh(BROKEN_CHOSEN, BROKEN_REJECTED, source_index=0, split="train")
    fine = pair_from_hh("\n\nHuman: hi\n\nAssistant: hello there",
                        "\n\nHuman: hi\n\nAssistant: go", source_index=1, split="train")
    assert pair.parse_issue and pair.prompt == "" and not fine.parse_issue
    store.ingest("raw", SourceResult(spec="raw", pairs=[pair, fine], read=2, rejected=[]))
    example_ids = [int(p.example_id or 0) for p in store.load_pairs("raw")]
    store.save_detector_run("raw", DetectorResult(
        detector="length_ratio", scores=np.array([2.0, 1.5]), flagged=np.array([True, True]),
        reasons=["chosen reply 2x longer"] * 2, threshold=1.0, threshold_kind="fixed",
        params={}), example_ids)
    import_flagged_indices(store, "raw", [0], label="notebook")


def test_a_card_of_a_dialogue_that_did_not_parse_shows_the_source_text(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/t.db") as store:
        _broken_pair_store(store)
        for base in _serve(store):
            page = httpx.get(f"{base}/queue", params={"dataset": "raw", "detector": "length_ratio",
                                                      "state": "all"}, timeout=60).text
    broken, fine = page.split('<article class="card"')[1:3]
    assert "This dialogue did not parse cleanly (chosen: no human turn before the final reply)" \
        in broken
    assert "Prompt <small class=\"missing\">none found: the dialogue did not parse</small>" in broken
    assert "<small>0 chars</small>" not in page  # no empty box anywhere
    assert "Chosen, as in the source" in broken and "Rejected, as in the source" in broken
    assert "Because &lt;b&gt;history&lt;/b&gt;" in broken and "<b>history" not in page
    assert "did not parse" not in fine and "as in the source" not in fine
    assert 'Prompt <small>2 chars</small>' in fine  # "hi"


def test_imported_flags_are_labelled_as_imported(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/t.db") as store:
        _broken_pair_store(store)
        for base in _serve(store):
            queue = httpx.get(f"{base}/queue", params={"dataset": "raw", "state": "all"},
                              timeout=60).text
            home = httpx.get(f"{base}/", timeout=60).text
            precision = httpx.get(f"{base}/precision", params={"dataset": "raw"}, timeout=60).text
            api = httpx.get(f"{base}/api/flags", params={"dataset": "raw", "detector": "notebook"},
                            timeout=60).json()
            both = httpx.get(f"{base}/api/flags", params={"dataset": "raw",
                                                          "detector": "length_ratio"},
                             timeout=60).json()
    assert '<option value="notebook">notebook (imported flags)</option>' in queue
    assert '<option value="length_ratio">length_ratio</option>' in queue
    assert ("notebook: flags imported from a file (<code>rewardlab flags import</code>), not found "
            'by a detector rewardlab ran; "any" includes them') in queue
    notebook_card = queue.split('data-detector="notebook">')[1]
    assert '<span class="kind" title="flags imported from a file' in notebook_card
    assert ">imported flags</span>" in notebook_card
    assert "<td>notebook</td><td>imported flags</td>" in home
    assert "flagged by any detector or imported flag list" in home
    assert "<td>imported flags</td>" in precision
    assert [i["kind"] for i in api["items"]] == ["imported"]
    (item,) = api["items"]
    assert item["parse_issue"] == "chosen: no human turn before the final reply"
    assert (item["raw_chosen"], item["raw_rejected"]) == (BROKEN_CHOSEN, BROKEN_REJECTED)
    # the raw texts come only with a dialogue that did not parse (elsewhere: None, not doubled)
    assert [(i["source_index"], i["raw_chosen"] is None) for i in both["items"]] == [
        (0, False), (1, True)]
