"""Adapter for an SMPP 3.4 carrier: hands each segment to the connector (`smsq smpp`).

Workers never speak SMPP: binds are long-lived TCP sessions a Celery thread cannot hold. The
adapter builds the segment's `submit_sm` body (`worker.smpp.submit`) and queues it on the
carrier's Redis Stream (`worker.smpp.queue`); the connector holding the binds sends it and
stores the SMSC's answer. So, as with Kannel, a segment is `sent` once queued: its carrier id
is ours (`<message_id>.<seq>`) until the `submit_sm_resp` names the SMSC's, and the answer —
accepted, or rejected with the SMPP status — is the level-1 receipt (`Accepted.awaiting_ack`).
Receipts come back over the binds as `deliver_sm`, never over HTTP.

Its `rate` counts submit_sm PDUs on the binds and is kept by the connector (`paces_itself`),
not by the workers' shared rate limiter.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Self

import redis

from worker.carriers.base import (
    Accepted,
    AdapterContext,
    CarrierAdapter,
    CarrierReceipt,
    InboundRequest,
    Probe,
    SegmentSubmission,
)
from worker.errors import (
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)
from worker.metrics import current_lane
from worker.smpp import queue
from worker.smpp.config import SmppConfig
from worker.smpp.submit import submit_body

if TYPE_CHECKING:
    from worker.carriers.config import CarriersConfig


def smpp_carriers(config: CarriersConfig) -> dict[str, SmppConfig]:
    """A configuration's SMPP carriers (the ones the connector serves): their options by name."""
    return {
        name: carrier.options
        for name, carrier in config.carriers.items()
        if carrier.adapter is SmppCarrier and isinstance(carrier.options, SmppConfig)
    }


def our_id(message_id: str, seq: int) -> str:
    """The carrier id a segment has until its SMSC names it: `<message_id>.<seq>`."""
    return f"{message_id}.{seq}"


class SmppCarrier(CarrierAdapter[SmppConfig]):
    """Queues segments for the SMPP connector; the SMSC's answer comes back as a receipt."""

    type_name = "smpp"
    Options = SmppConfig
    submits_whole_text = False  # unless `long_text = "payload"` (set per carrier)
    # The SMSC answers every submit_sm: level 1 waits for that answer.
    acknowledges_by_receipt = True
    # The connector keeps `rate`, in PDUs on its binds.
    paces_itself = True

    def __init__(self, client: redis.Redis | None, config: SmppConfig, *, name: str) -> None:
        self.name = name
        self.config = config
        # The SMSC cuts the text itself when it travels as one message_payload.
        self.submits_whole_text = config.long_text == "payload"
        self._redis = client

    @classmethod
    def from_config(cls, name: str, options: SmppConfig, context: AdapterContext) -> Self:
        return cls(context.redis, options, name=name)

    @classmethod
    def probe(cls, options: SmppConfig, context: AdapterContext) -> Probe:
        """The SMSC's port accepts a connection. No bind: an account's binds may all be taken
        by the connector, and a refused extra bind would say nothing of its credentials."""
        timeout = context.settings.carrier_connect_timeout
        try:
            socket.create_connection((options.host, options.port), timeout=timeout).close()
        except OSError as exc:
            return Probe(False, f"unreachable ({type(exc).__name__})")
        return Probe(True, "port open")

    def submit(self, segment: SegmentSubmission) -> Accepted:
        """Queue the segment's submit_sm for a bind; `sent` until the SMSC answers."""
        if segment.data_coding not in (0, 8):
            raise CarrierRejectedError(
                f"data_coding {segment.data_coding} not supported",
                carrier=self.name,
                code="unsupported_coding",
            )
        if self._redis is None:
            raise CarrierUnavailableError("no Redis to queue on", carrier=self.name)
        try:
            body = submit_body(segment, self.config)
        except ValueError as exc:  # a short_message past 254 octets, an address past its size
            raise CarrierRejectedError(str(exc), carrier=self.name, code="smpp_encoding") from exc
        try:
            # On its message's lane (the task's): the connector reads OTPs first.
            queue.enqueue(self._redis, self.name, segment.client_ref, body, current_lane.get())
        except redis.TimeoutError as exc:  # it may be queued: never queued twice blindly
            raise CarrierUnknownOutcomeError(
                f"queueing for the connector timed out: {exc}", carrier=self.name, code="queue"
            ) from exc
        except redis.RedisError as exc:
            raise CarrierUnavailableError(
                f"queueing for the connector failed: {exc}", carrier=self.name, code="queue"
            ) from exc
        return Accepted(carrier_id=our_id(segment.message_id, segment.seq), awaiting_ack=True)

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        """SMPP receipts come over the binds (deliver_sm), not over HTTP."""
        raise ValidationError("receipts of an SMPP carrier come over its binds", field="carrier")
