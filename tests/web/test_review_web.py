"""The review app over real HTTP on loopback: pages, the JSON API, the guard (host, token, same
origin), and the `rewardlab review` / `rewardlab reviews` commands."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _review_seed import LENGTH_FLAGGED, XSS, seed_store

from rewardlab.cli.main import main
from rewardlab.store.store import Store
from rewardlab.web.review import ReviewConfig, create_review_app
from rewardlab.web.review.guard import SESSION_COOKIE
from rewardlab.web.server import background_server

TOKEN = "s3cret-token"


@pytest.fixture
def seeded(db_url: str) -> Iterator[tuple[Store, list[int]]]:
    with Store(db_url) as store:
        yield store, seed_store(store)


@pytest.fixture
def sqlite_seeded(tmp_path: Path) -> Iterator[tuple[Store, list[int]]]:
    with Store(f"sqlite:///{tmp_path}/t.db") as store:
        yield store, seed_store(store)


def _serve(store: Store, **kw: object) -> Iterator[httpx.Client]:
    config = kw.pop("config", None) or ReviewConfig(reviewer="tester")
    app = create_review_app(store, config, **kw)  # type: ignore[arg-type]
    with background_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client


@pytest.fixture
def client(seeded: tuple[Store, list[int]]) -> Iterator[httpx.Client]:
    yield from _serve(seeded[0])


@pytest.fixture
def local(sqlite_seeded: tuple[Store, list[int]]) -> Iterator[httpx.Client]:
    yield from _serve(sqlite_seeded[0])


@pytest.fixture
def guarded(sqlite_seeded: tuple[Store, list[int]]) -> Iterator[httpx.Client]:
    yield from _serve(sqlite_seeded[0], token=TOKEN)


def _review(ids: list[int], i: int, verdict: str, **extra: object) -> dict[str, object]:
    return {"dataset": "rev", "example_id": ids[i], "detector": "length_ratio",
            "verdict": verdict, **extra}


def test_review_flow_over_the_api(client: httpx.Client, seeded: tuple[Store, list[int]]) -> None:
    store, ids = seeded
    datasets = client.get("/api/datasets").json()["datasets"]
    (rev,) = datasets
    assert (rev["name"], rev["pairs"], rev["flagged"]) == ("rev", {"train": 30, "test": 4}, 30)
    assert [(d["detector"], d["kind"], d["flagged"], d["reviewed"])
            for d in rev["detector_stats"]] == [("length_ratio", "rule", LENGTH_FLAGGED, 0),
                                               ("oof_margin", "model", 10, 0)]
    page = client.get("/api/flags", params={"detector": "oof_margin", "limit": 3}).json()
    assert (page["total"], page["limit"], len(page["items"])) == (10, 3, 3)
    assert [item["margin"] for item in page["items"]] == [-5.0, -4.5, -4.0]  # from the reasons
    assert [item["score"] for item in page["items"]] == sorted(
        [item["score"] for item in page["items"]], reverse=True)
    first = client.get("/api/flags", params={"detector": "length_ratio", "limit": 1}).json()
    assert first["items"][0]["margin"] is None and first["items"][0]["prompt"].count(XSS) == 1

    for i, verdict in enumerate(["tp", "tp", "tp", "fp"]):
        saved = client.post("/api/reviews", json=_review(ids, i, verdict, note=f"n{i}"))
        assert saved.status_code == 200, saved.text
        assert saved.json()["reviewer"] == "tester"  # the server's default reviewer
    edited = client.post("/api/reviews", json=_review(ids, 3, "tp", reviewer="ann"))
    assert edited.json()["reviewer"] == "ann"
    assert client.get("/api/flags", params={"detector": "length_ratio", "state": "unreviewed"}
                      ).json()["total"] == LENGTH_FLAGGED - 4
    assert client.get("/api/flags", params={"state": "disagreements"}).json()["total"] == 1
    mine = client.get("/api/flags", params={"state": "unreviewed", "reviewer": "ann",
                                            "detector": "length_ratio"}).json()
    assert mine["total"] == LENGTH_FLAGGED - 1
    stats = client.get("/api/reviews/stats").json()["detectors"]["length_ratio"]
    # pair 3: tester fp vs ann tp is a tie, so 3 decided, all tp
    assert (stats["reviewed"], stats["tp"], stats["undecided"], stats["disagreements"]) == (
        3, 3, 1, 1)
    assert stats["ci"] == pytest.approx([0.4385, 1.0], abs=1e-4)
    assert len(client.get("/api/reviews").json()["reviews"]) == 5
    assert len(store.reviews("rev")) == 5  # in the store itself


def test_pages_render_every_text_escaped(local: httpx.Client,
                                         sqlite_seeded: tuple[Store, list[int]]) -> None:
    _, ids = sqlite_seeded
    home = local.get("/")
    assert home.status_code == 200 and 'data-dataset="rev"' in home.text
    queue = local.get("/queue", params={"state": "all", "detector": "length_ratio"})
    assert queue.status_code == 200
    assert "<script>alert" not in queue.text
    assert "Tell me about &lt;script&gt;alert(1)&lt;/script&gt; please" in queue.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in queue.text
    assert queue.text.count('class="card"') == 20  # the page size
    assert " ".join(f"word{w}" for w in range(600)) in queue.text  # long text folded, not cut
    assert 'id="next-page"' in queue.text and "offset=20" in queue.text
    assert re.findall(r'<script[^>]*>', queue.text) == ['<script src="/static/review.js" defer>']
    oof = local.get("/queue", params={"detector": "oof_margin"}).text
    assert 'class="margin"' in oof and "margin -5.00" in oof
    local.post("/api/reviews", json=_review(ids, 0, "tp", note=XSS))
    reviewed = local.get("/queue", params={"state": "reviewed"}).text
    assert "tester: True positive — &lt;script&gt;" in reviewed and "<script>alert" not in reviewed
    precision = local.get("/precision")
    assert precision.status_code == 200 and 'src="/precision.png?dataset=rev"' in precision.text
    png = local.get("/precision.png")
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert local.get("/static/review.js").status_code == 200
    csp = queue.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert queue.headers["x-frame-options"] == "DENY"


BAD_REVIEWS = [
    ({"verdict": "maybe"}, 422, "verdict: Input should be 'tp', 'fp' or 'needs_review'"),
    ({"example_id": 0}, 422, "example_id: Input should be greater than or equal to 1"),
    ({"surprise": 1}, 422, "surprise: Extra inputs are not permitted"),
    ({"dataset": "nope"}, 404, "no dataset 'nope'; datasets: rev"),
    ({"detector": "nope"}, 404, "detector 'nope' has not run on dataset 'rev'"),
    ({"detector": "any"}, 422, "detector: name the detector whose flag this reviews"),
    ({"example_id": 99999}, 422, "latest run on 'rev' did not flag example 99999"),
    ({"note": "x" * 10_001}, 422, "note: at most 10000 characters"),
    ({"reviewer": "  "}, 422, "reviewer name must be 1..200 characters"),
]


def test_bad_reviews_get_one_line_errors(local: httpx.Client,
                                         sqlite_seeded: tuple[Store, list[int]]) -> None:
    for body, status, message in BAD_REVIEWS:
        response = local.post("/api/reviews", json={**_review(sqlite_seeded[1], 0, "tp"), **body})
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"], body
    assert sqlite_seeded[0].reviews("rev") == []


def test_malformed_requests(local: httpx.Client, sqlite_seeded: tuple[Store, list[int]]) -> None:
    form = local.post("/api/reviews", data={"verdict": "tp"})
    assert form.status_code == 415 and "Content-Type: application/json" in form.json()["error"]
    broken = local.post("/api/reviews", content=b"{not json",
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400
    huge = local.post("/api/reviews", content=b"x" * 70_000,
                      headers={"content-type": "application/json"})
    assert huge.status_code == 413
    assert local.get("/api/flags", params={"limit": 0}).json()["field"] == "limit"
    assert local.get("/api/flags", params={"state": "done"}).status_code == 422
    missing = local.get("/queue", params={"dataset": "nope"})
    assert missing.status_code == 404 and "no dataset &#39;nope&#39;" in missing.text


def test_loopback_app_refuses_foreign_hosts_and_cross_site_writes(
        local: httpx.Client, sqlite_seeded: tuple[Store, list[int]]) -> None:
    _, ids = sqlite_seeded
    # DNS rebinding: a foreign name resolving to 127.0.0.1 is not this app's origin
    assert local.get("/api/flags", headers={"host": "evil.example:8501"}).status_code == 400
    own = str(local.base_url).rstrip("/")
    body = _review(ids, 0, "tp")
    for headers in ({"origin": "http://evil.example"}, {"referer": "http://evil.example/x"},
                    {"origin": "null"}):
        refused = local.post("/api/reviews", json=body, headers=headers)
        assert refused.status_code == 403 and "cross-site write refused" in refused.json()["error"]
    assert local.post("/api/reviews", json=body, headers={"origin": own}).status_code == 200
    assert local.post("/api/reviews", json=body, headers={"referer": f"{own}/queue"}
                      ).status_code == 200
    assert local.post("/api/reviews", json=body).status_code == 200  # curl: no browser, no cookie


def test_token_guards_pages_api_and_static(guarded: httpx.Client,
                                           sqlite_seeded: tuple[Store, list[int]]) -> None:
    _, ids = sqlite_seeded
    for path in ("/", "/queue", "/api/flags", "/static/review.js", "/precision.png"):
        assert guarded.get(path).status_code == 401, path
    assert guarded.get("/api/flags", headers={"authorization": "Bearer wrong"}).status_code == 401
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/api/flags", headers=bearer).status_code == 200
    assert guarded.post("/api/reviews", json=_review(ids, 0, "tp"), headers=bearer
                        ).status_code == 200  # bearer: no cookie, no CSRF check needed
    assert guarded.get("/queue", params={"token": "wrong"}).status_code == 401
    login = guarded.get("/queue", params={"detector": "oof_margin", "token": TOKEN})
    assert login.status_code == 303
    assert login.headers["location"] == "/queue?detector=oof_margin"  # the token leaves the URL
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    assert guarded.get("/queue").status_code == 200  # the client now holds the cookie
    own = str(guarded.base_url).rstrip("/")
    body = _review(ids, 1, "fp")
    assert guarded.post("/api/reviews", json=body).status_code == 403  # cookie, no Origin
    assert guarded.post("/api/reviews", json=body, headers={"origin": "http://evil.example"}
                        ).status_code == 403
    assert guarded.post("/api/reviews", json=body, headers={"origin": own}).status_code == 200
    guarded.cookies.set(SESSION_COOKIE, "forged")
    assert guarded.get("/queue").status_code == 401


def test_cli_refuses_unsafe_binds_and_unknown_datasets(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/t.db"
    with Store(db) as store:
        seed_store(store)
    assert main(["review", "--db", db, "--host", "0.0.0.0"]) == 2
    assert "refusing to bind 0.0.0.0 without a token" in capsys.readouterr().err
    assert main(["review", "nope", "--db", db, "--port", "0"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err
    from rewardlab.web.server import free_port

    assert main(["review", "nope", "--db", db, "--port", str(free_port())]) == 2
    assert "no dataset 'nope'" in capsys.readouterr().err
    assert main(["review", "--db", db, "--token", " "]) == 2
    assert "--token is empty" in capsys.readouterr().err


def test_cli_reviews_stats_export_import(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/t.db"
    with Store(db) as store:
        ids = seed_store(store)
        for i in range(4):
            store.save_review("rev", example_id=ids[i], detector="length_ratio",
                              verdict="tp" if i else "fp", reviewer="ann")
    assert main(["reviews", "stats", "rev", "--db", db, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["length_ratio"]["tp"], stats["length_ratio"]["fp"]) == (3, 1)
    assert main(["reviews", "stats", "rev", "--db", db]) == 0
    assert "length_ratio" in capsys.readouterr().out
    out, xml = tmp_path / "queue.json", tmp_path / "config.xml"
    assert main(["reviews", "export", "rev", "--db", db, "-o", str(out),
                 "--label-config", str(xml)]) == 0
    assert f"wrote {LENGTH_FLAGGED + 10 - 4} unreviewed flag(s)" in capsys.readouterr().out
    assert '<Choice value="True positive: the flag is right" alias="tp"' in xml.read_text()
    tasks = json.loads(out.read_text())
    tasks[0]["annotations"] = [{"completed_by": {"id": 3, "email": "bo@example.org"}, "result": [
        {"from_name": "verdict", "to_name": "prompt", "type": "choices",
         "value": {"choices": ["needs_review"]}}]}]
    out.write_text(json.dumps(tasks))
    assert main(["reviews", "import", "rev", str(out), "--db", db]) == 0
    assert "imported 1 review(s)" in capsys.readouterr().out
    with Store(db) as store:
        assert store.reviews("rev")[-1]["reviewer"] == "bo@example.org"
    assert main(["reviews", "export", "rev", "--db", db, "-o", str(tmp_path / "x.txt")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
