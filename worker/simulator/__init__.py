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
  503 outage                             inside an outage (`outages`, `POST /outage`)
  429 throughput, with `Retry-After`     over `max_rate` submissions per second
  400 rejected                           scripted (`error_rate_4xx`)
  Accepted segments are decoded with `worker.encoding.decode_segment` and concatenated ones
  reassembled by (to, UDH reference); each completed message is recorded. With
  `dedupe_client_refs` (the CLI's default) a repeated `client_ref` is answered with its first
  carrier id and sends nothing, like a carrier honouring an idempotency key.

Receipt, `receipt_delay` seconds after acceptance, `POST <receipt_url>`:
    {"carrier_id", "status": "DELIVRD" | "UNDELIV" | "EXPIRED", "err": "000" | "001" | "002",
     "done_at": "<ISO-8601 UTC>"}
  Retried on network errors, 5xx and 429 (`receipt_attempts` in all), then dropped.
  With `receipt_batch` N > 1 the receipts due for the same URL go as one JSON list of up to N
  of these objects per POST, sent at the latest `receipt_batch_window_ms` after the first of
  them came due; the list is retried (and dropped) as a whole.
  Scripting (`worker.simulator.script`): `receipt_jitter` delays, `duplicate_receipts`,
  `out_of_order_receipts` (a late intermediate `ENROUTE` after the final), `fake_fast_receipts`
  (an instant DELIVRD) and `receipts_for = "last"` (only a message's last part gets one).

`POST /outage` `{"down": true}` (until told), `{"seconds": N}` or `{"down": false}`.

`POST /mo` `{"from", "to", "text", "url"?, "split"?, "order"?, "reference_bits"?, "id"?}`:
  send an inbound message to smsq (`url`, default `--mo-url`), signed with `--receipt-secret`
  as receipts are; `split` cuts a long text into concatenated parts (`order` "reverse": last
  part first). Answers `{"sent": N, "answers": [{"status", "body"}]}` (`worker.simulator.mo`).

`GET /stats` (for tests):
    {"submissions": N, "by_client_ref": {ref: count}, "duplicates": [ref, ...],
     "mismatches": [refs whose payload decoded to other than `text`],
     "messages": [{"to", "from", "text", "segments", "data_coding"}], "pending_parts": N,
     "errors": {code: count}, "receipts_sent": N, "receipts_failed": N (receipts),
     "receipt_requests": N (receipt POSTs made, every attempt; a batch is one),
     "submitted_at": [Unix time of each accepted submission],
     "deduplicated": N (repeats answered with the first carrier id)}
  Only accepted segments count as submissions. `POST /reset` clears all and drops pending
  receipts.
"""

from __future__ import annotations

from worker.simulator.app import create_simulator_app
from worker.simulator.cli import carrier_sim, run_simulator
from worker.simulator.config import SimulatorConfig

__all__ = ["SimulatorConfig", "carrier_sim", "create_simulator_app", "run_simulator"]
