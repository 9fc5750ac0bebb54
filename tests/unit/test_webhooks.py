"""Standard Webhooks signing, checked against the reference `standardwebhooks` verifier."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from worker.webhooks import generate_secret, sign, signature_headers

BODY = b'{"id":"msg_1","status":"delivered"}'


def now() -> int:
    """The current Unix time, inside the verifier's five-minute tolerance."""
    return int(time.time())


class TestGenerateSecret:
    def test_is_whsec_base64_of_32_bytes(self) -> None:
        """Returns `whsec_` + base64 of 32 random bytes."""
        secret = generate_secret()
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32

    def test_is_random(self) -> None:
        """Returns a different secret each time."""
        assert len({generate_secret() for _ in range(20)}) == 20


class TestSign:
    def test_reference_verifier_accepts(self) -> None:
        """Produces a signature the reference library verifies."""
        secret = generate_secret()
        headers = signature_headers([secret], "evt_1", now(), BODY)
        assert Webhook(secret).verify(BODY, headers) == {"id": "msg_1", "status": "delivered"}

    def test_matches_reference_signature_exactly(self) -> None:
        """Equals the reference library's own signature for the same input."""
        secret = generate_secret()
        timestamp = now()
        ours = sign([secret], "evt_1", timestamp, BODY)
        assert ours == Webhook(secret).sign(
            "evt_1", datetime.fromtimestamp(timestamp, tz=UTC), BODY.decode()
        )

    def test_rotation_signs_with_every_secret(self) -> None:
        """Signs once per secret, space-separated, so the old and the new secret each verify."""
        old, new = generate_secret(), generate_secret()
        headers = signature_headers([old, new], "evt_1", now(), BODY)
        assert len(headers["webhook-signature"].split(" ")) == 2
        Webhook(old).verify(BODY, headers)
        Webhook(new).verify(BODY, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(generate_secret()).verify(BODY, headers)

    @pytest.mark.parametrize(
        ("body", "header", "value"),
        [
            (b'{"id":"msg_1","status":"failed"}', None, ""),
            (BODY, "webhook-id", "evt_2"),
            (BODY, "webhook-signature", "v1,AAAA"),
        ],
    )
    def test_tampering_fails(self, body: bytes, header: str | None, value: str) -> None:
        """Fails verification when the body, the id or the signature is changed."""
        secret = generate_secret()
        headers = signature_headers([secret], "evt_1", now(), BODY)
        if header is not None:
            headers[header] = value
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, headers)

    def test_changed_timestamp_fails(self) -> None:
        """Fails verification when the timestamp header is changed."""
        secret = generate_secret()
        timestamp = now()
        headers = signature_headers([secret], "evt_1", timestamp, BODY)
        headers["webhook-timestamp"] = str(timestamp - 1)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(BODY, headers)

    def test_signs_an_empty_body(self) -> None:
        """Signs an empty body (`id.timestamp.`) verifiably."""
        secret = generate_secret()
        headers = signature_headers([secret], "evt_1", now(), b"")
        Webhook(secret).verify(b"", headers, json_parse=False)

    def test_signs_a_query_string_as_body(self) -> None:
        """Signs a GET receipt's query string so the reference verifier accepts it as payload."""
        secret = generate_secret()
        query = b"id=msg_1&status=delivered&segments_total=2"
        headers = signature_headers([secret], "evt_1", now(), query)
        Webhook(secret).verify(query, headers, json_parse=False)

    def test_accepts_unprefixed_secret(self) -> None:
        """Accepts a secret without the `whsec_` prefix, as the spec's decoding allows."""
        secret = generate_secret()
        assert sign([secret.removeprefix("whsec_")], "e", 1, b"") == sign([secret], "e", 1, b"")

    def test_headers_carry_id_and_timestamp(self) -> None:
        """Puts the id and the integer timestamp in their headers."""
        headers = signature_headers([generate_secret()], "evt_9", 1_700_000_000, b"")
        assert headers["webhook-id"] == "evt_9"
        assert headers["webhook-timestamp"] == "1700000000"
        assert headers["webhook-signature"].startswith("v1,")

    @pytest.mark.parametrize(
        ("secrets", "msg_id", "error"),
        [
            ([], "evt_1", ValueError),
            (["whsec_"], "evt_1", ValueError),
            (["whsec_not base64!"], "evt_1", ValueError),
            ([generate_secret()], "evt.1", ValueError),
            ([generate_secret()], "", ValueError),
            (generate_secret(), "evt_1", TypeError),
        ],
        ids=["none", "empty", "not-base64", "dot-in-id", "empty-id", "bare-string"],
    )
    def test_refuses_bad_input(
        self, secrets: list[str], msg_id: str, error: type[Exception]
    ) -> None:
        """Refuses no secrets, undecodable secrets, a bare string, and ids with dots."""
        with pytest.raises(error):
            sign(secrets, msg_id, 1, b"")
