"""Against a real server (``alignkit feedback serve`` in a subprocess on 127.0.0.1): 20
annotators submitting 500 rankings at once lose none and duplicate none, and a SIGKILL in the
middle of the run loses no ranking the server had acknowledged.

Loops are bounded by step counts and a deadline; the server is stopped at the end either way.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from alignkit.feedback.importer import NewItem
from alignkit.feedback.models import STATUS_SUBMITTED
from alignkit.feedback.store import FeedbackStore
from alignkit.feedback.testing import POSTGRES_ENV, ServerProcess, fresh_postgres_database

N_ANNOTATORS = 20
N_ITEMS = 500
K = 4
DEADLINE_S = 90.0

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get(POSTGRES_ENV) else [])


@dataclass
class Ack:
    annotation_id: int
    item_id: int
    ranking: list[int]
    safe: list[bool]
    duplicate: bool


@dataclass
class Run:
    """What the simulated annotators saw: acknowledgements, retries, errors."""

    acks: list[Ack] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ack: Ack) -> None:
        with self.lock:
            self.acks.append(ack)

    def count(self) -> int:
        with self.lock:
            return len(self.acks)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "feedback.db")
        return
    with fresh_postgres_database(os.environ[POSTGRES_ENV]) as url:
        yield url


def prepare(db: str) -> list[str]:
    """N_ITEMS items and N_ANNOTATORS tokens in a fresh database."""
    store = FeedbackStore(db)
    try:
        store.add_items(
            NewItem(f"prompt {i}", [f"response {i}.{j}" for j in range(K)], {}, f"t:{i}")
            for i in range(N_ITEMS)
        )
        return [store.add_annotator(f"annotator-{n:02d}") for n in range(N_ANNOTATORS)]
    finally:
        store.close()


def request_with_retry(
    client: httpx.Client, run: Run, method: str, path: str, body: dict | None = None
) -> httpx.Response:
    """Send, and on a transport error (server down) resend the same request until the deadline.

    Resending is what a real client does when it never got a reply; the server must make it
    harmless (a claim resumes the open assignment, a submission is recognised as a duplicate).
    """
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return client.request(method, path, json=body)
        except httpx.TransportError:
            with run.lock:
                run.retries += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def annotate(url: str, token: str, seed: int, run: Run) -> None:
    """One annotator: claim, rank at random, submit; until nothing is left (bounded)."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    # trust_env=False keeps every request on loopback even if a proxy is configured.
    with httpx.Client(base_url=url, headers=headers, timeout=30.0, trust_env=False) as client:
        for _step in range(N_ITEMS + 5):
            r = request_with_retry(client, run, "POST", "/api/next")
            if r.status_code != 200:
                run.errors.append(f"next: {r.status_code} {r.text}")
                return
            ann = r.json()["annotation"]
            if ann is None:
                return
            ranking = rng.sample(range(K), K)
            safe = [rng.random() < 0.7 for _ in range(K)]
            path = f"/api/annotations/{ann['annotation_id']}"
            r = request_with_retry(client, run, "PUT", path, {"ranking": ranking, "safe": safe})
            if r.status_code != 200:
                run.errors.append(f"submit: {r.status_code} {r.text}")
                return
            run.add(
                Ack(ann["annotation_id"], ann["item"]["id"], ranking, safe, r.json()["duplicate"])
            )
        run.errors.append("annotator did not finish within its step bound")


def start_annotators(url: str, tokens: list[str], run: Run) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=annotate, args=(url, token, n, run), daemon=True)
        for n, token in enumerate(tokens)
    ]
    for t in threads:
        t.start()
    return threads


def join(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "annotators still running at the deadline"


def stored(db: str) -> dict[int, tuple[int, list[int], list[bool] | None, str]]:
    """annotation id -> (item id, ranking, safe, status) for every annotation in the database."""
    from sqlalchemy import select

    from alignkit.feedback.models import Annotation

    store = FeedbackStore(db)
    try:
        with store.db.read() as s:
            rows = s.execute(
                select(
                    Annotation.id,
                    Annotation.item_id,
                    Annotation.ranking,
                    Annotation.safe,
                    Annotation.status,
                )
            ).all()
        return {r.id: (r.item_id, r.ranking, r.safe, r.status) for r in rows}
    finally:
        store.close()


def assert_all_acks_stored(acks: list[Ack], db_rows: dict) -> None:
    for ack in acks:
        assert ack.annotation_id in db_rows, f"acknowledged ranking {ack.annotation_id} lost"
        item_id, ranking, safe, status = db_rows[ack.annotation_id]
        assert (item_id, ranking, safe, status) == (
            ack.item_id,
            ack.ranking,
            ack.safe,
            STATUS_SUBMITTED,
        )


def assert_complete_without_duplicates(run: Run, db_rows: dict) -> None:
    assert not run.errors, run.errors[:5]
    ids = [a.annotation_id for a in run.acks]
    assert len(ids) == len(set(ids)) == N_ITEMS
    assert len({a.item_id for a in run.acks}) == N_ITEMS  # per_item=1: each item ranked once
    submitted = {k: v for k, v in db_rows.items() if v[3] == STATUS_SUBMITTED}
    assert set(submitted) == set(ids), "database and acknowledgements differ"
    assert len({v[0] for v in submitted.values()}) == N_ITEMS
    assert all(v[3] == STATUS_SUBMITTED for v in db_rows.values()), "unfinished assignments left"
    assert_all_acks_stored(run.acks, db_rows)


def test_20_annotators_submit_500_rankings_at_once(db_url: str, tmp_path: Path) -> None:
    tokens = prepare(db_url)
    run = Run()
    with ServerProcess(db_url, log_path=tmp_path / "server.log") as server:
        start = time.perf_counter()
        join(start_annotators(server.url, tokens, run))
        elapsed = time.perf_counter() - start
    assert_complete_without_duplicates(run, stored(db_url))
    assert run.retries == 0
    print(
        f"\n{N_ITEMS} rankings by {N_ANNOTATORS} annotators in {elapsed:.2f}s ({N_ITEMS / elapsed:.0f}/s)"
    )


def test_sigkill_mid_run_loses_no_acknowledged_ranking(db_url: str, tmp_path: Path) -> None:
    tokens = prepare(db_url)
    run = Run()
    log = tmp_path / "server.log"
    server = ServerProcess(db_url, log_path=log).start()
    try:
        threads = start_annotators(server.url, tokens, run)
        deadline = time.monotonic() + DEADLINE_S
        while run.count() < N_ITEMS // 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()
        # Every reply a client holds now was sent before the process died.
        acked_before_kill = list(run.acks)
        assert N_ITEMS // 3 <= len(acked_before_kill) < N_ITEMS
        # Straight from the database file, before any restart: nothing acknowledged is missing.
        assert_all_acks_stored(acked_before_kill, stored(db_url))

        # Restart on the same port; the annotators' pending requests are retried and go through.
        server = ServerProcess(db_url, port=server.port, log_path=log).start()
        join(threads)
    finally:
        server.stop()
    db_rows = stored(db_url)
    assert_complete_without_duplicates(run, db_rows)
    assert run.retries > 0  # the kill really interrupted requests in flight
    print(
        f"\nkilled after {len(acked_before_kill)} acknowledged rankings; all kept; "
        f"{run.retries} retried requests, {sum(a.duplicate for a in run.acks)} duplicate replies"
    )


def test_concurrent_claims_never_overfill_an_item_or_repeat_a_person(db_url: str) -> None:
    """per_item=3, 12 annotators claiming from threads with no pause: every item ends with
    exactly 3 different annotators (the serialised claim is what makes this hold)."""
    n_items, per_item, n_annotators = 40, 3, 12
    store = FeedbackStore(db_url, per_item=per_item)
    try:
        store.add_items(NewItem(f"p{i}", ["a", "b"], {}, f"t:{i}") for i in range(n_items))
        people = [store.authenticate(store.add_annotator(f"a{n}")) for n in range(n_annotators)]
        barrier = threading.Barrier(n_annotators)
        errors: list[BaseException] = []

        def work(who: object) -> None:
            try:
                barrier.wait(timeout=30)
                for _ in range(n_items + 1):
                    ann = store.next_assignment(who)  # type: ignore[arg-type]
                    if ann is None:
                        return
                    store.submit(who, ann.id, [1, 0])  # type: ignore[arg-type]
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(p,)) for p in people]
        for t in threads:
            t.start()
        join(threads)
        assert not errors, errors[:3]
    finally:
        store.close()
    by_item: dict[int, list[int]] = {}
    for ann_id, (item_id, _r, _s, status) in stored(db_url).items():
        assert status == STATUS_SUBMITTED
        by_item.setdefault(item_id, []).append(ann_id)
    assert len(by_item) == n_items
    assert all(len(ids) == per_item for ids in by_item.values())
