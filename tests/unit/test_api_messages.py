"""`GET /sms` (the key's messages, paged), key caching with immediate revocation, grouped
single sends, and batches accepted in steps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from producer.desk import BATCH_STEP
from producer.intake import Intake
from producer.services import Services
from tests.unit.fake_services import fake_services, keyed_client
from worker.errors import RateLimitedError, ValidationError
from worker.keys import CreatedKey
from worker.quotas import RevokedKeyError
from worker.settings import Settings
from worker.store import key_messages_key, message_key

TO = "+14155552671"
OTHER = "+14155552672"


@pytest.fixture
def services() -> Services:
    return fake_services(Settings())


@pytest.fixture
def key(services: Services) -> CreatedKey:
    return services.keys.create("owner")


@pytest.fixture
def api(services: Services, key: CreatedKey) -> Iterator[TestClient]:
    with keyed_client(services, key.api_key) as client:
        yield client


def send(api: TestClient, to: str = TO, **body: Any) -> str:
    reply = api.post("/sms/send", json={"to": to, "content": "hi", **body})
    assert reply.status_code == 202, reply.text
    message_id: str = reply.json()["id"]
    return message_id


def pages(api: TestClient, **params: Any) -> list[list[str]]:
    """Every page of `GET /sms` with these filters, as lists of ids."""
    found: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        reply = api.get("/sms", params=query)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        found.append([m["id"] for m in page["messages"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


class TestListing:
    def test_pages_are_newest_first_and_cover_everything_once(self, api: TestClient) -> None:
        """Seven messages in pages of three: 3 + 3 + 1, newest first, none twice."""
        ids = [send(api) for _ in range(7)]
        found = pages(api, limit=3)
        assert [len(p) for p in found[:3]] == [3, 3, 1]
        assert [i for p in found for i in p] == list(reversed(ids))

    def test_a_key_sees_only_its_own_messages(self, api: TestClient, services: Services) -> None:
        """Another key's messages are not listed, and its list has none of ours."""
        mine = send(api)
        with keyed_client(services) as stranger:
            theirs = send(stranger)
            assert [i for p in pages(stranger) for i in p] == [theirs]
        assert [i for p in pages(api) for i in p] == [mine]

    def test_filters_keep_what_they_name(self, api: TestClient) -> None:
        """`to`, `status` and `batch_id` each keep the matching messages only."""
        first = send(api, TO)
        second = send(api, OTHER)
        cancelled = send(api, OTHER)
        assert api.delete(f"/sms/{cancelled}").status_code == 200
        batch = api.post("/sms/batch", json={"content": "b", "recipients": [TO, OTHER]}).json()
        in_batch = [i for p in pages(api, batch_id=batch["id"]) for i in p]
        assert len(in_batch) == 2
        assert first not in in_batch
        by_number = [i for p in pages(api, to="14155552672") for i in p]
        assert len(by_number) == 3  # second, cancelled and the batch's own
        assert {second, cancelled} < set(by_number)
        assert first not in by_number
        assert [i for p in pages(api, status="cancelled") for i in p] == [cancelled]

    def test_since_and_until_bound_the_creation_time(
        self, api: TestClient, services: Services
    ) -> None:
        """Messages created outside [since, until] are not listed."""
        ids = [send(api) for _ in range(3)]
        created = [int(services.store.fields(i)["created_at"]) for i in ids]
        listed = [i for p in pages(api, since=created[1], until=created[1]) for i in p]
        assert ids[1] in listed
        assert all(created[1] == int(services.store.fields(i)["created_at"]) for i in listed)
        assert [i for p in pages(api, since=created[2] + 1) for i in p] == []

    def test_a_rare_filter_still_ends_with_bounded_pages(
        self, api: TestClient, services: Services, key: CreatedKey, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a small scan budget, a filter that matches little gives short pages and a
        cursor until the index is walked; the match is found."""
        monkeypatch.setattr("producer.listing.SCAN_BUDGET", 4)
        wanted = send(api, OTHER)
        for _ in range(9):
            send(api, TO)
        found = pages(api, to=OTHER)
        assert len(found) > 1
        assert [i for p in found for i in p] == [wanted]

    def test_entries_of_messages_that_are_gone_are_dropped(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        """An index entry whose message no longer exists is skipped and removed."""
        kept, gone = send(api), send(api)
        services.redis.delete(message_key(gone))
        assert [i for p in pages(api) for i in p] == [kept]
        assert services.redis.zrange(key_messages_key(key.key.id), 0, -1) == [kept]

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"status": "lost"}, "status"),
            ({"since": "yesterday"}, "since"),
            ({"cursor": "zz"}, "cursor"),
            ({"limit": 0}, "limit"),
            ({"to": "12"}, "to"),
        ],
    )
    def test_bad_filters_are_422_naming_them(
        self, api: TestClient, params: dict[str, Any], field: str
    ) -> None:
        """Each bad filter is refused with its name."""
        reply = api.get("/sms", params=params)
        assert reply.status_code == 422
        assert reply.json()["error"]["field"] == field


class TestKeyCache:
    def test_a_revoked_key_is_refused_at_once_though_cached(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        """The process caches the key, but its revocation holds from the very next call."""
        message_id = send(api)
        assert api.get(f"/sms/{message_id}").status_code == 200
        services.keys.revoke(key.key.id)
        for method, path, body in [
            ("POST", "/sms/send", {"to": TO, "content": "hi"}),
            ("GET", f"/sms/{message_id}", None),
            ("GET", "/sms", None),
            ("POST", "/sms/batch", {"content": "hi", "recipients": [TO]}),
        ]:
            reply = api.request(method, path, json=body)
            assert reply.status_code == 401, (method, path, reply.text)
        assert services.redis.zrange(key_messages_key(key.key.id), 0, -1) == [message_id]

    def test_a_revoked_key_with_a_bad_body_is_401(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        """Revocation is answered before the body is judged."""
        send(api)
        services.keys.revoke(key.key.id)
        assert api.post("/sms/send", json={"to": "1", "content": "hi"}).status_code == 401

    def test_a_cached_key_costs_no_lookup(self, services: Services, key: CreatedKey) -> None:
        """Within the cache time a key is found without Redis; after it, looked up again."""
        now = [0.0]
        services.gate.clock = lambda: now[0]
        services.gate.lookup(key.api_key)
        assert services.gate.cached(key.api_key) == key.key
        now[0] += services.gate.ttl + 0.1
        assert services.gate.cached(key.api_key) is None


class TestIntake:
    def test_a_group_of_sends_gets_one_answer_each(
        self, services: Services, key: CreatedKey
    ) -> None:
        """Sends written together are still judged one by one: accepted, invalid, over the
        rate, revoked — each hears its own answer."""
        slow = services.keys.create("slow", rate=1, burst=1)
        gone = services.keys.create("gone")
        fast, limited = services.gate.lookup(key.api_key), services.gate.lookup(slow.api_key)
        revoked = services.gate.lookup(gone.api_key)
        services.keys.revoke(gone.key.id)
        intake = Intake(services.desk)
        good = orjson.dumps({"to": TO, "content": "hi"})
        bad = orjson.dumps({"to": "1", "content": "hi"})

        async def all_at_once() -> list[Any]:
            calls = [
                intake.send(fast, good, None),
                intake.send(fast, bad, None),
                intake.send(limited, good, None),
                intake.send(limited, good, None),
                intake.send(revoked, good, None),
                intake.send(fast, good, "once"),
                intake.send(fast, good, "once"),
            ]
            return list(await asyncio.gather(*calls, return_exceptions=True))

        answers: list[Any] = asyncio.run(all_at_once())
        assert answers[0]["status"] == "queued"
        assert isinstance(answers[1], ValidationError)
        assert answers[2]["status"] == "queued"
        assert isinstance(answers[3], RateLimitedError)
        assert isinstance(answers[4], RevokedKeyError)
        assert answers[5] == answers[6]  # the same Idempotency-Key: the first answer again
        stored = services.redis.zrange(key_messages_key(key.key.id), 0, -1)
        assert sorted(stored) == sorted({answers[0]["id"], answers[5]["id"]})

    def test_the_thread_stops_when_idle_and_starts_again(
        self, services: Services, key: CreatedKey, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After an idle spell the intake thread ends; the next send starts a new one."""
        monkeypatch.setattr("producer.intake.IDLE_SECONDS", 0.01)
        intake = Intake(services.desk)
        caller = services.gate.lookup(key.api_key)
        body = orjson.dumps({"to": TO, "content": "hi"})
        first = asyncio.run(intake.send(caller, body, None))
        thread = intake._thread
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive()
        assert intake._thread is None
        second = asyncio.run(intake.send(caller, body, None))
        assert first["id"] != second["id"]


class TestBatchSteps:
    def test_a_large_batch_is_accepted_in_bounded_steps(
        self, services: Services, key: CreatedKey
    ) -> None:
        """Parsing is one step, then BATCH_STEP recipients per step; indexes stay global."""
        recipients: list[Any] = [TO] * (2 * BATCH_STEP + 10)
        recipients[BATCH_STEP + 3] = {"to": TO, "vars": "not a mapping"}
        raw = orjson.dumps({"content": "hi", "recipients": recipients})
        ingest = services.desk.accept_batch(raw, key.key.id, caller=key.key)
        steps = 1
        while (reply := ingest.step()) is None:
            steps += 1
        assert steps == 1 + 3 + 1  # parse, three chunks, the answer
        assert reply["accepted"] == len(recipients) - 1
        (rejected,) = reply["rejected"]
        assert rejected["index"] == BATCH_STEP + 3
        assert rejected["error"]["field"].startswith(f"recipients.{BATCH_STEP + 3}")
