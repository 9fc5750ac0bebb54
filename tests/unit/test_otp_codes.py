"""OTP codes: random digits, stored only as a keyed MAC, sealed for the worker until sent."""

from __future__ import annotations

import base64

import pytest

from worker.errors import ValidationError
from worker.otp.codes import CodeKeys, OtpUnavailableError, new_code, render
from worker.otp.content import CHALLENGE_FIELD, CODE_FIELD, message_text
from worker.settings import Settings
from worker.store import Message

SECRET = "unit-test-server-key-0123456789abcdef"


@pytest.fixture
def keys() -> CodeKeys:
    return CodeKeys(SECRET)


class TestNewCode:
    @pytest.mark.parametrize("length", [4, 6, 8, 10])
    def test_has_the_asked_number_of_digits(self, length: int) -> None:
        """A code is exactly `length` decimal digits."""
        for _ in range(200):
            code = new_code(length)
            assert len(code) == length
            assert code.isdigit()

    def test_keeps_leading_zeros_and_varies(self) -> None:
        """Codes are zero-padded and drawn at random (4 digits: zeros lead one time in ten)."""
        codes = [new_code(4) for _ in range(2000)]
        assert any(code.startswith("0") for code in codes)
        assert len(set(codes)) > 1000

    @pytest.mark.parametrize("length", [3, 11])
    def test_refuses_lengths_outside_4_to_10(self, length: int) -> None:
        """Lengths outside 4..10 are a programming error."""
        with pytest.raises(ValueError, match="length"):
            new_code(length)


class TestRender:
    def test_replaces_every_placeholder(self) -> None:
        """Every `{code}` in the template becomes the code."""
        assert render("{code} is your code ({code})", "1234") == "1234 is your code (1234)"


class TestCodeKeys:
    def test_no_server_key_means_otp_is_unavailable(self) -> None:
        """An empty server key is refused rather than used."""
        with pytest.raises(OtpUnavailableError, match="SMSQ_SECRET_KEY"):
            CodeKeys("")

    def test_mac_is_keyed_and_bound_to_the_challenge(self, keys: CodeKeys) -> None:
        """The MAC of a code differs per challenge and per server key, and is not the code."""
        mac = keys.mac("c1", "123456")
        assert len(mac) == 64
        assert "123456" not in mac
        assert mac != keys.mac("c2", "123456")
        assert mac != CodeKeys("another-key").mac("c1", "123456")
        assert keys.matches("c1", "123456", mac)
        assert not keys.matches("c1", "123457", mac)
        assert not keys.matches("c2", "123456", mac)

    def test_seal_round_trips_for_its_message_only(self, keys: CodeKeys) -> None:
        """A sealed code opens for the message it was sealed for, and for no other."""
        sealed = keys.seal("123456", "m1")
        assert "123456" not in sealed
        assert keys.unseal(sealed, "m1") == "123456"
        with pytest.raises(ValidationError) as raised:
            keys.unseal(sealed, "m2")
        assert raised.value.code == "otp_unsealable"

    def test_seal_is_randomised(self, keys: CodeKeys) -> None:
        """Sealing the same code twice gives different ciphertexts (fresh nonce)."""
        assert keys.seal("123456", "m1") != keys.seal("123456", "m1")

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda s: s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1],
            lambda s: "v2." + s[3:],
            lambda s: "v1.not-base64!",
        ],
    )
    def test_tampered_or_foreign_seals_do_not_open(self, keys: CodeKeys, tamper: object) -> None:
        """A modified sealed code, or one of another format, fails cleanly."""
        sealed = tamper(keys.seal("123456", "m1"))  # type: ignore[operator]
        with pytest.raises(ValidationError):
            keys.unseal(sealed, "m1")

    def test_another_server_key_cannot_unseal(self, keys: CodeKeys) -> None:
        """A code sealed under one server key does not open under another."""
        with pytest.raises(ValidationError, match="SMSQ_SECRET_KEY"):
            CodeKeys("another-key").unseal(keys.seal("123456", "m1"), "m1")

    def test_repr_hides_the_keys(self, keys: CodeKeys) -> None:
        """Printing the keys object shows nothing of them."""
        assert repr(keys) == "CodeKeys(<hidden>)"

    def test_sealed_form_is_nonce_plus_ciphertext_plus_tag(self, keys: CodeKeys) -> None:
        """v1 = 12-byte nonce, ciphertext as long as the code, 16-byte tag."""
        raw = base64.urlsafe_b64decode(keys.seal("12345678", "m1")[3:])
        assert len(raw) == 12 + 8 + 16


def otp_message(keys: CodeKeys, code: str = "246810", **changes: object) -> Message:
    fields: dict[str, object] = {
        "id": "m1",
        "to": "+14155552671",
        "sender": "smsq",
        "content": "Your code is {code}",
        "otp": True,
        "extra": {CHALLENGE_FIELD: "c1", CODE_FIELD: keys.seal(code, "m1")},
    }
    fields.update(changes)
    return Message(**fields)  # type: ignore[arg-type]


class TestMessageText:
    def test_plain_message_text_is_its_content(self) -> None:
        """A message that is not an OTP is sent as stored, even with braces in it."""
        message = Message(id="m1", to="+14155552671", sender="smsq", content="Hi {code}")
        assert message_text(message, Settings()) == "Hi {code}"

    def test_otp_message_gets_its_code_unsealed(self, keys: CodeKeys) -> None:
        """The worker writes the unsealed code into the template."""
        settings = Settings(secret_key=SECRET)
        assert message_text(otp_message(keys), settings) == "Your code is 246810"

    def test_worker_without_a_server_key_fails_the_message(self, keys: CodeKeys) -> None:
        """No server key on the worker: a ValidationError (the sender fails the message)."""
        with pytest.raises(ValidationError) as raised:
            message_text(otp_message(keys), Settings())
        assert raised.value.code == "otp_unavailable"

    def test_worker_with_another_key_fails_the_message(self, keys: CodeKeys) -> None:
        """A worker whose server key differs from the API's cannot unseal the code."""
        with pytest.raises(ValidationError) as raised:
            message_text(otp_message(keys), Settings(secret_key="not-the-api-key"))
        assert raised.value.code == "otp_unsealable"
