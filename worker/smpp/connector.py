"""The SMPP connector process (`smsq smpp`): one `CarrierLink` per SMPP carrier configured.

Built from the settings like a worker (`worker.runtime`: the store, the receipt intake and
publisher, so receipts reach clients exactly as HTTP carriers' do), plus a Redis client that
does not decode (the queued PDUs are bytes) and a few threads for the blocking Redis calls.
SIGTERM / SIGINT stop it cleanly (`CarrierLink.stop`); a kill loses nothing either (see
`worker.smpp.queue`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

from worker.carriers.config import load_carriers
from worker.carriers.smpp import smpp_carriers
from worker.inbound import ReceiptIntake
from worker.runtime import build_runtime, redis_client
from worker.settings import Settings
from worker.smpp.link import CarrierLink
from worker.smpp.outcomes import Outcomes
from worker.smpp.queue import SegmentQueue

log = logging.getLogger(__name__)

THREADS_PER_CARRIER = 4


def consumer_name() -> str:
    """This process's name in the carriers' consumer groups: host, pid and a random tail."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def run(settings: Settings) -> int:
    """Serve every SMPP carrier until SIGTERM / SIGINT; 1 if there is none."""
    config = load_carriers(settings)
    served = smpp_carriers(config)
    if not served:
        return 1  # the command line says so
    rt = build_runtime(settings)
    threads = THREADS_PER_CARRIER * len(served)
    client = redis_client(settings, threads * 2, decode_responses=False)  # PDUs are bytes
    intake = ReceiptIntake(rt.store, rt.publisher, rt.router)
    consumer = consumer_name()
    with ThreadPoolExecutor(threads, thread_name_prefix="smpp-redis") as executor:
        links = []
        for name, options in served.items():
            carrier = config.carriers[name]
            queue = SegmentQueue(client, name, consumer)
            links.append(
                CarrierLink(
                    name, options, options.secret, queue, Outcomes(name, queue, intake),
                    executor, rate=carrier.rate, burst=carrier.burst,
                    response_timeout=settings.carrier_read_timeout * 3,
                    max_age=settings.reconcile_ack_deadline,
                )
            )  # fmt: skip
        asyncio.run(_serve(links))
    client.close()
    rt.close()
    return 0


async def _serve(links: list[CarrierLink]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for link in links:
            link.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    log.info("smpp connector running", extra={"carriers": [link.name for link in links]})
    await asyncio.gather(*(link.run() for link in links))
