"""Inbound messages as carriers send them: Kannel's sms-service GET, Twilio's inbound webhook,
the generic JSON of `sim` / `http`; and the opt-out keywords read from their texts."""

from __future__ import annotations

from urllib.parse import quote_from_bytes, urlencode

import orjson
import pytest

from worker.carriers.base import InboundRequest
from worker.errors import ValidationError
from worker.mo.formats import InboundMo, kannel_text, parse
from worker.mo.keywords import Keyword, Keywords, check_languages
from worker.mo.owners import canonical_number

BASE = "http://smsq.test/carriers/kannel/mo"


def kannel(query: str) -> InboundRequest:
    return InboundRequest("GET", f"{BASE}?{query}", {}, {})


def escaped(data: bytes) -> str:
    """As smsbox escapes a `%b` or `%u` value."""
    return quote_from_bytes(data, safe="")


class TestKannel:
    def test_the_documented_get_url_is_read(self) -> None:
        """from, to, text, coding, charset and id come from the parameters docs/inbound.md
        names (`%p`, `%P`, `%b`, `%c`, `%C`, `%I`)."""
        query = (
            "token=t&from=%2B4915112340001&to=4930123456&text=Hello%20there&udh=&coding=0"
            "&charset=UTF-8&id=f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
        )
        (mo,) = parse("kannel", kannel(query))
        assert mo == InboundMo(
            "+4915112340001", "4930123456", "Hello there", b"",
            "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        )  # fmt: skip

    def test_ucs2_text_is_decoded_from_its_bytes(self) -> None:
        """Coding 2 (`%c`) is UCS-2: `%b` holds UTF-16BE bytes, an emoji's surrogate pair
        included."""
        text = "Привет 👋"
        data = escaped(text.encode("utf-16-be"))
        query = f"from=491511&to=4930&coding=2&charset=UTF-16BE&text={data}"
        (mo,) = parse("kannel", kannel(query))
        assert mo.text == text

    def test_gsm_text_arrives_as_utf8(self) -> None:
        """Kannel hands GSM text on in UTF-8 (its internal form), accents and € included."""
        text = "Café à 5€"
        (mo,) = parse("kannel", kannel(f"from=1&to=2&text={escaped(text.encode())}&coding=0"))
        assert mo.text == text

    @pytest.mark.parametrize(
        ("raw", "coding", "charset", "text"),
        [
            (b"caf\xe9", "0", "WINDOWS-1252", "café"),
            (b"caf\xe9", "0", "ISO-8859-1", "café"),
            ("é".encode("utf-16-be"), "", "UTF-16BE", "é"),
            (b"plain", "0", "no-such-charset", "plain"),
            (b"\xff\xfe", "0", "", "\ufffd\ufffd"),
        ],
    )
    def test_charsets(self, raw: bytes, coding: str, charset: str, text: str) -> None:
        """The charset Kannel names decodes the bytes; unknown ones fall back to UTF-8, and
        bytes that do not decode become U+FFFD instead of losing the message."""
        assert kannel_text(raw, coding, charset) == text

    def test_the_udh_of_a_part_is_kept_as_bytes(self) -> None:
        """`%u` is the binary header of a part Kannel did not reassemble."""
        udh = bytes.fromhex("050003a70201")
        (mo,) = parse("kannel", kannel(f"from=1&to=2&text=part&udh={escaped(udh)}"))
        assert mo.udh == udh

    @pytest.mark.parametrize(
        ("query", "field"),
        [("to=2&text=x", "from"), ("from=1&text=x", "to"), ("from=1&to=" + "9" * 40, "to")],
    )
    def test_a_request_without_its_addresses_is_refused(self, query: str, field: str) -> None:
        """A missing or absurd address is a ValidationError naming the parameter."""
        with pytest.raises(ValidationError) as refused:
            parse("kannel", kannel(query))
        assert refused.value.field == field


class TestTwilio:
    def test_the_inbound_webhook_form_is_read(self) -> None:
        """From, To, Body and MessageSid of Twilio's form POST."""
        form = {"From": "+14155552671", "To": "+14155550100", "Body": "STOP",
                "MessageSid": "SM" + "a" * 32, "NumSegments": "1"}  # fmt: skip
        request = InboundRequest("POST", "http://smsq.test/carriers/twilio/mo", {}, {},
                                 urlencode(form).encode(), form)  # fmt: skip
        (mo,) = parse("twilio", request)
        assert mo == InboundMo("+14155552671", "+14155550100", "STOP", b"", "SM" + "a" * 32)

    def test_a_form_without_from_is_refused(self) -> None:
        request = InboundRequest("POST", "http://x/", {}, {}, b"", {"To": "+1", "Body": "x"})
        with pytest.raises(ValidationError) as refused:
            parse("twilio", request)
        assert refused.value.field == "From"


class TestJson:
    def json(self, body: object) -> InboundRequest:
        return InboundRequest("POST", "http://smsq.test/carriers/sim/mo", {}, {},
                              orjson.dumps(body))  # fmt: skip

    def test_one_mo(self) -> None:
        body = {"from": "+4915112340001", "to": "+4930123456", "text": "hi", "udh": "050003010201",
                "id": "sim-1"}  # fmt: skip
        (mo,) = parse("sim", self.json(body))
        assert mo == InboundMo("+4915112340001", "+4930123456", "hi", bytes.fromhex("050003010201"),
                               "sim-1")  # fmt: skip

    def test_a_list_of_mos(self) -> None:
        body = [{"from": "1", "to": "2", "text": "a"}, {"from": "3", "to": "4", "text": "b"}]
        assert [mo.text for mo in parse("http", self.json(body))] == ["a", "b"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"to": "2", "text": "x"}, "from"),
            ({"from": "1", "to": "2"}, "text"),
            ({"from": "1", "to": "2", "text": "x", "udh": "zz"}, "udh"),
            ([{"from": "1", "to": "2", "text": "x"}, {"from": "1", "text": "x"}], "1.to"),
            ([], "body"),
            ("just text", "body"),
        ],
    )
    def test_malformed_bodies_name_their_field(self, body: object, field: str) -> None:
        with pytest.raises(ValidationError) as refused:
            parse("sim", self.json(body))
        assert refused.value.field == field

    def test_not_json_is_refused(self) -> None:
        request = InboundRequest("POST", "http://x/", {}, {}, b"{nope")
        with pytest.raises(ValidationError):
            parse("http", request)


class TestKeywords:
    @pytest.mark.parametrize(
        ("text", "keyword"),
        [
            ("STOP", Keyword.OPTOUT),
            ("stop", Keyword.OPTOUT),
            ("  Stop.  ", Keyword.OPTOUT),
            ("StopAll", Keyword.OPTOUT),
            ("UNSUBSCRIBE!", Keyword.OPTOUT),
            ("cancel", Keyword.OPTOUT),
            ("End", Keyword.OPTOUT),
            ("quit\n", Keyword.OPTOUT),
            ("START", Keyword.OPTIN),
            ("unstop", Keyword.OPTIN),
            ("Yes", Keyword.OPTIN),
            ("please stop", None),
            ("STOP IT", None),
            ("stopp", None),
            ("", None),
            ("arret", None),
        ],
    )
    def test_english_by_default(self, text: str, keyword: Keyword | None) -> None:
        """Twilio's words, whole message only, case-insensitive, trimmed."""
        assert Keywords.of(["en"]).match(text) is keyword

    def test_other_languages_and_own_words(self) -> None:
        """A language's list adds its words, accents folded; own words add to them."""
        keywords = Keywords.of(["en", "fr", "de"], optout=["Halte"], optin=["Reprise"])
        assert keywords.match("ARRÊT") is Keyword.OPTOUT
        assert keywords.match("arrêter") is Keyword.OPTOUT
        assert keywords.match("Stopp") is Keyword.OPTOUT
        assert keywords.match("halte") is Keyword.OPTOUT
        assert keywords.match("reprise") is Keyword.OPTIN

    def test_a_word_in_both_lists_opts_out(self) -> None:
        """The safer reading wins."""
        assert Keywords.of([], optout=["YES"], optin=["YES"]).match("yes") is Keyword.OPTOUT

    def test_unknown_languages_are_refused(self) -> None:
        with pytest.raises(ValueError, match="xx"):
            check_languages(["en", "xx"])


class TestNumbers:
    @pytest.mark.parametrize(
        ("raw", "canonical"),
        [
            ("+4915112340001", "+4915112340001"),
            ("4915112340001", "+4915112340001"),
            ("004915112340001", "+4915112340001"),
            ("+49 151 1234 0001", "+4915112340001"),
            ("12345", "12345"),
            ("015112340001", "015112340001"),
            ("SMSQ", "SMSQ"),
            ("*", "*"),
        ],
    )
    def test_canonical_numbers(self, raw: str, canonical: str) -> None:
        """International numbers become E.164; short codes and national forms stay."""
        assert canonical_number(raw) == canonical
