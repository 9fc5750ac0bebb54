"""An SMPP carrier's options in the carriers file (`type = "smpp"`), checked when loaded.

The keys beside the ones every carrier has (`type`, `rate`, `burst`, …):

    host, port, system_id          where and as whom to bind
    password, password_file        the bind's password (`Password`)
    bind                           "transceiver", or "transmitter" + "receiver" (a pair per bind)
    binds, window                  sessions held open; outstanding submit_sm per session
    system_type, enquire_link      bind's system_type; seconds between enquire_links
    source_ton, source_npi,        force these instead of deriving them from each number
    dest_ton, dest_npi
    long_text                      "udh" (default), "sar" (sar_* TLVs), "payload" (message_payload)
    id_bases                       [submit_sm_resp base, receipt base]: "hex" / "decimal" / "text"
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from worker.carriers.options import Password

BindMode = Literal["transceiver", "transmitter", "receiver", "transmitter + receiver"]
LongText = Literal["udh", "sar", "payload"]
IdBase = Literal["text", "hex", "decimal"]


class SmppConfig(Password):
    """`[carriers.NAME]` of `type = "smpp"`: one SMPP account, where to bind, how many
    sessions, how to address and cut messages."""

    host: str = Field(min_length=1)
    port: int = Field(2775, ge=1, le=65535)
    system_id: str = Field(min_length=1, max_length=15)  # SMPP 3.4: at most 15 octets
    # "transmitter" alone cannot hear receipts: "transmitter + receiver" (or a list of both)
    # holds one of each per bind.
    bind: BindMode = "transceiver"
    binds: int = Field(1, ge=1, le=64)
    window: int = Field(10, ge=1, le=1000)
    system_type: str = Field("", max_length=12)
    enquire_link: float = Field(30.0, gt=0)
    source_ton: int | None = Field(None, ge=0, le=6)
    source_npi: int | None = Field(None, ge=0, le=18)
    dest_ton: int | None = Field(None, ge=0, le=6)
    dest_npi: int | None = Field(None, ge=0, le=18)
    long_text: LongText = "udh"
    # Some SMSCs answer submit_sm in hex and report receipts in decimal (or the reverse):
    # ids are compared as numbers in those bases, else as text.
    id_bases: tuple[IdBase, IdBase] = ("text", "text")

    @model_validator(mode="before")
    @classmethod
    def _bind_pair(cls, data: object) -> object:
        """`bind = ["transmitter", "receiver"]` is the same as "transmitter + receiver"."""
        if isinstance(data, dict) and isinstance(data.get("bind"), list | tuple):
            modes = sorted(str(mode) for mode in data["bind"])
            if modes == ["receiver", "transmitter"]:
                return {**data, "bind": "transmitter + receiver"}
            if len(modes) == 1:
                return {**data, "bind": modes[0]}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.bind == "receiver":
            raise ValueError('bind "receiver" alone cannot send: "transmitter + receiver"')
        if self.bind == "transmitter":
            raise ValueError('bind "transmitter" alone hears no receipts: "transmitter + receiver"')
        if "text" in self.id_bases and len(set(self.id_bases)) > 1:
            raise ValueError('id_bases: both "text", or each "hex" or "decimal"')
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def transmits_alone(self) -> bool:
        """Whether each bind is a transmitter with a receiver beside it (not a transceiver)."""
        return self.bind == "transmitter + receiver"
