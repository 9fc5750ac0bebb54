"""Hostile input: schemathesis generates requests from the API's own OpenAPI document.

Every operation gets valid and invalid requests (within a bounded number of examples, so the
run stays well under a minute) against the real API under uvicorn, on the session's Redis,
with a valid bearer key; no answer may be a 5xx, and every answer must match the schema the
document declares for its status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from producer.api import create_app
from tests.integration.stack import SECRET_KEY, run_scheduler
from tests.servers import serve_app
from worker.keys import KeyStore
from worker.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLES = 40  # per operation and generation mode
# Random strings are almost never phone numbers (or OTP templates), so requests would stop at
# those checks; some examples get real ones, to reach storing, scheduling and queueing too.
NUMBERS = st.sampled_from([None, "+14155552671", "447911123456", "+4915112345678"])


def with_number(body: Any, number: str) -> None:
    """Put `number` wherever a generated body has a recipient (and a usable OTP template)."""
    if not isinstance(body, dict):
        return
    if "to" in body:
        body["to"] = number
    if "template" in body:
        body["template"] = "Your code is {code}"
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict):
            message["to"] = number
    recipients = body.get("recipients")
    if isinstance(recipients, list):
        for i, recipient in enumerate(recipients):
            if isinstance(recipient, dict):
                recipient["to"] = number
            else:
                recipients[i] = number


@pytest.fixture(scope="module")
def api(redis_server_url: str) -> Iterator[tuple[str, str]]:
    """The API (and a scheduler, so /readyz is ready) on a clean Redis; its URL and a key."""
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    client.flushdb()
    settings = Settings(
        redis_url=redis_server_url, secret_key=SECRET_KEY, dlr_allow_private=["127.0.0.0/8"]
    )
    with serve_app(create_app(settings)) as url, run_scheduler(redis_server_url, settings):
        yield url, KeyStore(client).create("fuzz").api_key
    client.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_answers_match_the_schema(
    api: tuple[str, str], mode: GenerationMode, request: pytest.FixtureRequest
) -> None:
    """Whatever is sent to any operation, the answer is not a 5xx and matches the schema."""
    url, key = api
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) >= 12
    examples: list[str] = []
    unsatisfiable: list[str] = []
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.body:
            # Nothing to make invalid but free-form path segments (every string is a valid
            # one): the positive run covers these.
            unsatisfiable.append(operation.label)
            continue
        strategy = operation.as_strategy(mode, headers={"authorization": f"Bearer {key}"})

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),  # generation speed is not under test
            derandomize=True,  # the same requests every run: a failure reproduces
            database=None,
        )
        @given(case=strategy, number=NUMBERS)
        def check(case: Any, number: str | None) -> None:
            examples.append(case.operation.label)
            if number is not None:
                with_number(case.body, number)
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        try:
            check()
        except Unsatisfiable:
            # Negative mode only: nothing of this operation can be made invalid (no parameters,
            # no body), so it has no invalid request to send.
            assert mode is GenerationMode.NEGATIVE
            unsatisfiable.append(operation.label)
    request.node.user_properties.append(("examples", len(examples)))
    assert set(examples) | set(unsatisfiable) == {op.label for op in operations}
    assert len(examples) >= len(operations) * 3
