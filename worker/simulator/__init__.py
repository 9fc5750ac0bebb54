"""The carrier simulator (`smsq carrier-sim`): an SMSC over HTTP for development and tests.

Wire protocol (JSON bodies; errors are `{"error": {"code", "message"}}`):

`POST /submit` one segment:
    {"to": "+4915...", "from": "smsq", "udh": "<hex, '' if none>", "payload": "<hex>",
     "data_coding": 0 | 8, "client_ref": "<message_id>:<seq>", "receipt_url": "<url>" | null,
     "text": "<this segment's text>"}
  200 {"carrier_id": "sim-<uuid hex>"}   accepted
  400 bad_request                        malformed body
  400 bad_payload                        UDH / payload / data_coding does not decode
  400 invalid_destination                `to` starts with a configured reject prefix
  429 throttled, with `Retry-After`      scripted (`error_rate_429`, `retry_after`)
  503 unavailable                        scripted (`error_rate_5xx`)
  Accepted segments are decoded with `worker.encoding.decode_segment` and concatenated ones
  reassembled by (to, UDH reference); each completed message is recorded.

Receipt, `receipt_delay` seconds after acceptance, `POST <receipt_url>`:
    {"carrier_id", "status": "DELIVRD" | "UNDELIV" | "EXPIRED", "err": "000" | "001" | "002",
     "done_at": "<ISO-8601 UTC>"}
  Retried on network errors, 5xx and 429 (`receipt_attempts` in all), then dropped.

`GET /stats` (for tests):
    {"submissions": N, "by_client_ref": {ref: count}, "duplicates": [ref, ...],
     "mismatches": [refs whose payload decoded to other than `text`],
     "messages": [{"to", "from", "text", "segments", "data_coding"}], "pending_parts": N,
     "errors": {code: count}, "receipts_sent": N, "receipts_failed": N}
  Only accepted segments count as submissions. `POST /reset` clears all and drops pending
  receipts.
"""

from __future__ import annotations

from worker.simulator.app import create_simulator_app
from worker.simulator.cli import carrier_sim, run_simulator
from worker.simulator.config import SimulatorConfig

__all__ = ["SimulatorConfig", "carrier_sim", "create_simulator_app", "run_simulator"]
