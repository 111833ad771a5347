"""The feedback app's HTTP API: the annotation flow, authentication, isolation between
annotators, input validation, idempotent resubmission, assignment rules and the admin stats.

Every test runs against a temporary SQLite file and, when ALIGNKIT_TEST_POSTGRES_URL is set,
against a fresh PostgreSQL database as well. All of them go through FastAPI's TestClient; the
real-server tests are in test_feedback_concurrency.py and test_feedback_browser.py.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alignkit.feedback.app import STATIC_DIR, create_app
from alignkit.feedback.importer import NewItem
from alignkit.feedback.store import FeedbackStore
from alignkit.feedback.testing import POSTGRES_ENV, fresh_postgres_database

XSS_PROMPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


# PostgreSQL joins the parameters only when a server is configured; test_feedback_postgres.py
# reports the skip (with its reason) once instead of once per test here.
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get(POSTGRES_ENV) else [])


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "feedback.db")
        return
    with fresh_postgres_database(os.environ[POSTGRES_ENV]) as url:
        yield url


def make_items(n: int, k: int = 3) -> list[NewItem]:
    return [
        NewItem(
            prompt=f"prompt {i}",
            responses=[f"response {i}.{j}" for j in range(k)],
            metadata={"n": i},
            source=f"test:{i}",
        )
        for i in range(n)
    ]


class Env:
    """A running app (TestClient) over a store with items, and tokens by annotator name."""

    def __init__(self, db_url: str, *, per_item: int = 1, n_items: int = 3, **store_kw: object):
        self.store = FeedbackStore(db_url, per_item=per_item, **store_kw)  # type: ignore[arg-type]
        self.store.add_items(make_items(n_items))
        self.tokens = {
            "alice": self.store.add_annotator("alice"),
            "bob": self.store.add_annotator("bob"),
            "carol": self.store.add_annotator("carol"),
            "admin": self.store.add_annotator("admin", is_admin=True),
        }
        self.client = TestClient(create_app(db_url, store=self.store))

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def next(self, who: str) -> dict:
        r = self.client.post("/api/next", headers=self.h(who))
        assert r.status_code == 200, r.text
        return r.json()

    def close(self) -> None:
        self.client.close()
        self.store.close()


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    e = Env(db_url)
    yield e
    e.close()


def test_annotation_flow_submit_resubmit_and_progress(env: Env) -> None:
    first = env.next("alice")
    ann = first["annotation"]
    assert ann["item"] == {
        "id": ann["item"]["id"],
        "prompt": "prompt 0",
        "responses": ["response 0.0", "response 0.1", "response 0.2"],
    }
    assert first["progress"] == {"submitted": 0, "skipped": 0, "open": 1, "available": 2}
    # Asking again before finishing resumes the same assignment instead of taking another item.
    assert env.next("alice")["annotation"]["annotation_id"] == ann["annotation_id"]

    url = f"/api/annotations/{ann['annotation_id']}"
    body = {"ranking": [2, 0, 1], "safe": [True, False, True]}
    r = env.client.put(url, json=body, headers=env.h("alice"))
    assert r.status_code == 200, r.text
    assert r.json()["duplicate"] is False
    assert r.json()["progress"]["submitted"] == 1

    # A retry of the same body (reply lost) is acknowledged as a duplicate, not stored twice.
    again = env.client.put(url, json=body, headers=env.h("alice"))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    # A different ranking for a submitted item is refused: acknowledged data never changes.
    changed = env.client.put(url, json={"ranking": [0, 1, 2]}, headers=env.h("alice"))
    assert changed.status_code == 409
    got = env.client.get(url, headers=env.h("alice")).json()
    assert got["status"] == "submitted" and got["ranking"] == [2, 0, 1]
    assert got["safe"] == [True, False, True]

    mine = env.client.get("/api/annotations", headers=env.h("alice")).json()["annotations"]
    assert [a["annotation_id"] for a in mine] == [ann["annotation_id"]]

    seen = {ann["item"]["id"]}
    for _ in range(2):
        nxt = env.next("alice")["annotation"]
        assert nxt["item"]["id"] not in seen
        seen.add(nxt["item"]["id"])
        r = env.client.put(
            f"/api/annotations/{nxt['annotation_id']}",
            json={"ranking": [0, 1, 2]},
            headers=env.h("alice"),
        )
        assert r.status_code == 200
    done = env.next("alice")
    assert done["annotation"] is None
    assert done["progress"] == {"submitted": 3, "skipped": 0, "open": 0, "available": 0}
    me = env.client.get("/api/me", headers=env.h("alice")).json()
    assert me["name"] == "alice" and me["is_admin"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/me"),
        ("POST", "/api/next"),
        ("GET", "/api/annotations"),
        ("GET", "/api/annotations/1"),
        ("PUT", "/api/annotations/1"),
        ("POST", "/api/annotations/1/skip"),
        ("GET", "/api/admin/stats"),
    ],
)
def test_requests_without_a_valid_token_get_401(env: Env, method: str, path: str) -> None:
    body = {"ranking": [0, 1, 2]} if method == "PUT" else None
    bad_headers = [
        {},
        {"Authorization": "Bearer akf_not-a-real-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWxpY2U6cGFzcw=="},
        {"Authorization": env.tokens["alice"]},  # no scheme
        {"Authorization": "Bearer " + env.tokens["alice"][:-1]},
    ]
    for headers in bad_headers:
        r = env.client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.headers["www-authenticate"] == "Bearer"


def test_revoked_and_rotated_tokens_stop_working(env: Env) -> None:
    assert env.client.get("/api/me", headers=env.h("bob")).status_code == 200
    env.store.revoke_annotator("bob")
    assert env.client.get("/api/me", headers=env.h("bob")).status_code == 401
    old = env.tokens["carol"]
    env.tokens["carol"] = env.store.add_annotator("carol", rotate=True)
    assert env.client.get("/api/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert env.client.get("/api/me", headers=env.h("carol")).status_code == 200


def test_tokens_are_stored_only_as_hashes(env: Env) -> None:
    from sqlalchemy import select

    from alignkit.feedback.models import Annotator

    with env.store.db.read() as s:
        stored = set(s.scalars(select(Annotator.token_hash)))
    for token in env.tokens.values():
        assert token not in stored
        assert all(token not in h for h in stored)
        assert re.fullmatch(r"akf_[A-Za-z0-9_-]{43}", token)


def test_one_annotator_cannot_read_or_overwrite_anothers_ranking(env: Env) -> None:
    ann = env.next("alice")["annotation"]
    url = f"/api/annotations/{ann['annotation_id']}"
    assert (
        env.client.put(url, json={"ranking": [1, 0, 2]}, headers=env.h("alice")).status_code == 200
    )

    assert env.client.get(url, headers=env.h("bob")).status_code == 404
    assert env.client.put(url, json={"ranking": [0, 1, 2]}, headers=env.h("bob")).status_code == 404
    assert env.client.post(url + "/skip", headers=env.h("bob")).status_code == 404
    # Even an invalid body gets 404, not 422: the response reveals nothing about the annotation.
    assert env.client.put(url, json={"ranking": [9, 9]}, headers=env.h("bob")).status_code == 404
    assert env.client.get("/api/annotations", headers=env.h("bob")).json()["annotations"] == []

    # Bob's own open assignment cannot be completed by Alice either.
    bob_ann = env.next("bob")["annotation"]
    bob_url = f"/api/annotations/{bob_ann['annotation_id']}"
    assert (
        env.client.put(bob_url, json={"ranking": [0, 1, 2]}, headers=env.h("alice")).status_code
        == 404
    )
    assert env.client.get(bob_url, headers=env.h("bob")).json()["status"] == "assigned"

    got = env.client.get(url, headers=env.h("alice")).json()
    assert got["ranking"] == [1, 0, 2] and got["status"] == "submitted"


@pytest.mark.parametrize(
    "body",
    [
        {"ranking": [0, 1, 3]},  # out of range
        {"ranking": [0, 1, -1]},  # negative
        {"ranking": [0, 0, 1]},  # repeated
        {"ranking": [0, 1]},  # too short
        {"ranking": [0, 1, 2, 3]},  # too long
        {"ranking": [0, 1, "2"]},  # not an integer
        {"ranking": [0, 1, 2.0]},
        {"ranking": [True, False, 2]},  # booleans are not indices
        {"ranking": [0, 1, 2], "safe": [True, False]},  # one label per response
        {"ranking": [0, 1, 2], "safe": ["yes", True, True]},
        {"ranking": [0, 1, 2], "extra": 1},  # unknown fields are refused, not ignored
        {"ranking": list(range(100))},
        {},
    ],
)
def test_invalid_rankings_get_422_and_change_nothing(env: Env, body: dict) -> None:
    ann = env.next("alice")["annotation"]
    url = f"/api/annotations/{ann['annotation_id']}"
    r = env.client.put(url, json=body, headers=env.h("alice"))
    assert r.status_code == 422, r.text
    assert env.client.get(url, headers=env.h("alice")).json()["status"] == "assigned"
    # The item is still rankable afterwards.
    assert (
        env.client.put(url, json={"ranking": [2, 1, 0]}, headers=env.h("alice")).status_code == 200
    )


def test_malformed_json_and_bad_ids_are_rejected(env: Env) -> None:
    ann = env.next("alice")["annotation"]
    url = f"/api/annotations/{ann['annotation_id']}"
    r = env.client.put(
        url, content=b"{not json", headers={**env.h("alice"), "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert env.client.get("/api/annotations/abc", headers=env.h("alice")).status_code == 422
    assert env.client.get("/api/annotations/999999", headers=env.h("alice")).status_code == 404
    for bad in ("0", "-1", str(2**31), str(10**30)):
        assert env.client.get(f"/api/annotations/{bad}", headers=env.h("alice")).status_code == 422
    for query in ("limit=0", "limit=501", "offset=-1", f"offset={10**30}"):
        assert (
            env.client.get(f"/api/annotations?{query}", headers=env.h("alice")).status_code == 422
        )


def test_skip_sends_item_to_someone_else_never_back(env: Env) -> None:
    ann = env.next("alice")["annotation"]
    item_id = ann["item"]["id"]
    url = f"/api/annotations/{ann['annotation_id']}"
    r = env.client.post(url + "/skip", headers=env.h("alice"))
    assert r.status_code == 200 and r.json()["progress"]["skipped"] == 1
    assert env.client.post(url + "/skip", headers=env.h("alice")).json()["duplicate"] is True
    assert (
        env.client.put(url, json={"ranking": [0, 1, 2]}, headers=env.h("alice")).status_code == 409
    )
    assert env.next("bob")["annotation"]["item"]["id"] == item_id
    ids = []
    while (nxt := env.next("alice")["annotation"]) is not None:
        ids.append(nxt["item"]["id"])
        env.client.put(
            f"/api/annotations/{nxt['annotation_id']}",
            json={"ranking": [0, 1, 2]},
            headers=env.h("alice"),
        )
        assert len(ids) <= 3
    assert item_id not in ids and len(ids) == 2


def test_per_item_gives_each_item_to_that_many_different_annotators(db_url: str) -> None:
    e = Env(db_url, per_item=2, n_items=2)
    try:
        a, b, c = (e.next(n)["annotation"] for n in ("alice", "bob", "carol"))
        assert a["item"]["id"] == b["item"]["id"] != c["item"]["id"]
        for who, ann in (("alice", a), ("bob", b), ("carol", c)):
            r = e.client.put(
                f"/api/annotations/{ann['annotation_id']}",
                json={"ranking": [0, 1, 2]},
                headers=e.h(who),
            )
            assert r.status_code == 200
        # Alice already ranked item 1 and item 1 is full: she gets item 2; Bob likewise.
        assert e.next("alice")["annotation"]["item"]["id"] == c["item"]["id"]
        assert e.next("bob")["annotation"] is None  # item 2 now has carol + alice holding slots
        assert e.next("carol")["annotation"] is None  # carol has done item 2; item 1 is full
    finally:
        e.close()


def test_abandoned_assignment_is_reassigned_after_the_lease(db_url: str) -> None:
    e = Env(db_url, per_item=1, n_items=1, lease=timedelta(milliseconds=200))
    try:
        a = e.next("alice")["annotation"]
        assert e.next("bob")["annotation"] is None  # the only slot is held by alice
        time.sleep(0.3)
        b = e.next("bob")["annotation"]
        assert b is not None and b["item"]["id"] == a["item"]["id"]
        # Alice may still submit late: her work is kept (the item ends with two rankings).
        for who, ann in (("alice", a), ("bob", b)):
            r = e.client.put(
                f"/api/annotations/{ann['annotation_id']}",
                json={"ranking": [0, 1, 2]},
                headers=e.h(who),
            )
            assert r.status_code == 200
        assert e.store.stats().rankings == 2
    finally:
        e.close()


def test_admin_stats_need_an_admin_token_and_report_agreement(db_url: str) -> None:
    e = Env(db_url, per_item=2, n_items=2)
    try:
        assert e.client.get("/api/admin/stats", headers=e.h("alice")).status_code == 403
        # Item 1: alice [0,1,2], bob [1,0,2]: agree on 2 of 3 pairs, different best response.
        for who, ranking, safe in (
            ("alice", [0, 1, 2], [True, True, False]),
            ("bob", [1, 0, 2], [True, False, False]),
        ):
            ann = e.next(who)["annotation"]
            r = e.client.put(
                f"/api/annotations/{ann['annotation_id']}",
                json={"ranking": ranking, "safe": safe},
                headers=e.h(who),
            )
            assert r.status_code == 200
        skip = e.next("carol")["annotation"]
        e.client.post(f"/api/annotations/{skip['annotation_id']}/skip", headers=e.h("carol"))
        r = e.client.get("/api/admin/stats", headers=e.h("admin"))
        assert r.status_code == 200
        s = r.json()
        assert (s["items"], s["rankings"], s["skipped"], s["items_complete"]) == (2, 2, 1, 1)
        assert s["items_by_rankings"] == {"0": 1, "2": 1}
        ag = s["agreement"]
        assert ag["items_compared"] == 1 and ag["comparisons"] == 1
        assert ag["pairwise_agreement"] == pytest.approx(2 / 3, abs=1e-12)
        assert ag["kendall_tau"] == pytest.approx(1 / 3, abs=1e-12)
        assert ag["top1_agreement"] == 0.0
        assert ag["safety_agreement"] == pytest.approx(2 / 3, abs=1e-12)
        rows = {row["name"]: row for row in s["annotators"]}
        assert rows["alice"]["submitted"] == 1 and rows["carol"]["skipped"] == 1
        assert rows["alice"]["agreement"] == pytest.approx(2 / 3, abs=1e-12)
        assert rows["admin"]["is_admin"] is True
    finally:
        e.close()


def test_html_in_prompts_is_returned_as_data_and_pages_forbid_inline_script(db_url: str) -> None:
    store = FeedbackStore(db_url)
    try:
        store.add_items(
            [NewItem(XSS_PROMPT, ["<b>bold</b>", "</li><script>alert(1)</script>"], {}, "t:1")]
        )
        token = store.add_annotator("alice")
        with TestClient(create_app(db_url, store=store)) as client:
            r = client.post("/api/next", headers={"Authorization": f"Bearer {token}"})
            item = r.json()["annotation"]["item"]
            assert item["prompt"] == XSS_PROMPT
            assert item["responses"][1] == "</li><script>alert(1)</script>"
            assert r.headers["content-type"].startswith("application/json")
            for page in ("/", "/admin"):
                html = client.get(page)
                assert html.status_code == 200
                csp = html.headers["content-security-policy"]
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp
                assert html.headers["x-content-type-options"] == "nosniff"
                # No inline script in our own pages, so the policy costs nothing.
                assert "<script>" not in html.text
            assert client.get("/static/app.js").status_code == 200
    finally:
        store.close()


def test_front_end_never_writes_data_as_html() -> None:
    """The static rule behind the browser test: no HTML-parsing sinks in our scripts."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function"
    )
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert {p.name for p in scripts} >= {"app.js", "admin.js", "common.js"}
    for path in scripts:
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(encoding="utf-8"), flags=re.S)
        found = sinks.search(code)
        assert found is None, f"{path.name}: {found and found.group(0)}"


def test_chat_message_prompts_round_trip(db_url: str) -> None:
    store = FeedbackStore(db_url)
    try:
        prompt = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
        ]
        responses = [
            [{"role": "assistant", "content": "Red."}],
            [{"role": "assistant", "content": "Blue."}],
        ]
        store.add_items([NewItem(prompt, responses, {}, "t:1")])
        token = store.add_annotator("alice")
        with TestClient(create_app(db_url, store=store)) as client:
            item = client.post("/api/next", headers={"Authorization": f"Bearer {token}"}).json()
            assert item["annotation"]["item"]["prompt"] == prompt
            assert item["annotation"]["item"]["responses"] == responses
    finally:
        store.close()
