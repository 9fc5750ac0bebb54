"""The producer library against the real system: send, send_many, schedule, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from producer.cli import app
from producer.library import Producer
from tests.integration.stack import Stack, running_stack
from worker.errors import ValidationError
from worker.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(redis_server_url: str) -> Iterator[Stack]:
    with running_stack(redis_server_url) as running:
        yield running


@pytest.fixture
def producer(stack: Stack) -> Iterator[Producer]:
    settings = Settings(redis_url=stack.redis_url, dlr_allow_private=["127.0.0.0/8"])
    with Producer(settings=settings, api_key=stack.key.api_key) as library:
        yield library


class TestProducer:
    def test_send_is_delivered_with_a_signed_receipt(
        self, stack: Stack, producer: Producer
    ) -> None:
        """A library send is validated, delivered, and its receipt signed with the key's secret."""
        message_id = producer.send(
            "+14155552671",
            "from python",
            dlr=True,
            dlr_level=1,
            dlr_url=f"{stack.receiver_url}/lib",
        )
        stack.wait_status(message_id, {"delivered"})
        (receipt,) = stack.receiver.wait_for(1)
        assert receipt.json()["id"] == message_id

    def test_invalid_input_names_the_field(self, producer: Producer) -> None:
        """The library validates exactly as the API does."""
        with pytest.raises(ValidationError) as caught:
            producer.send("+1", "x")
        assert caught.value.field == "to"

    def test_send_many_accepts_and_rejects_per_message(
        self, stack: Stack, producer: Producer
    ) -> None:
        """send_many stores the valid messages as one batch and lists the invalid ones."""
        result = producer.send_many(
            [{"to": "+4915112345678", "content": f"m{i}"} for i in range(20)]
            + [{"to": "+4915112345678", "content": ""}]
        )
        assert len(result.accepted) == 20
        assert [r["index"] for r in result.rejected] == [20]
        for message_id in result.accepted:
            stack.wait_status(message_id, {"delivered"})

    def test_schedule_then_cancel_sends_nothing(self, stack: Stack, producer: Producer) -> None:
        """A scheduled message cancelled before its time is never submitted."""
        message_id = producer.schedule(
            "+447911123456", "later", at=datetime.now(UTC) + timedelta(seconds=30)
        )
        assert producer.cancel(message_id)
        assert not producer.cancel(message_id)
        assert stack.message(message_id)["status"] == "cancelled"
        assert f"{message_id}:1" not in stack.sim_stats()["by_client_ref"]


class TestCampaignCli:
    def test_csv_batch_is_sent_and_reported(self, stack: Stack, tmp_path: Path) -> None:
        """`smsq batch send FILE.csv --template` sends each row once; `batch status` counts them."""
        rows = ["to,name"] + [f"+4915112345{i:03d},N{i}" for i in range(30)] + ["12,bad"]
        csv_file = tmp_path / "campaign.csv"
        csv_file.write_text("\n".join(rows) + "\n")
        runner = CliRunner()
        common = ["--api-url", stack.api_url, "--key", stack.key.api_key]
        sent = runner.invoke(
            app, ["batch", "send", str(csv_file), "--template", "Hi {name}", "--follow", *common]
        )
        assert sent.exit_code == 0, sent.output
        batch_id = sent.output.strip().splitlines()[-1].split()[1].rstrip(":")
        assert "30 accepted, 1 rejected" in sent.output
        status = runner.invoke(app, ["batch", "status", batch_id, *common])
        counters = orjson.loads(status.stdout)
        assert (counters["accepted"], counters["delivered"], counters["done"]) == (30, 30, True)
        texts = {m["text"] for m in stack.sim_stats()["messages"]}
        assert {f"Hi N{i}" for i in range(30)} <= texts
