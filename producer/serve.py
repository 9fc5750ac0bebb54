"""One API process of `smsq up`: `python -m producer.serve FD` serves the API on the listening
socket it inherits as descriptor FD. `smsq up` binds the port once and starts
`SMSQ_API_PROCESSES` of these on it: the kernel hands each connection to one of them, a process
that dies is restarted while the others (and the socket's backlog) keep taking requests."""

from __future__ import annotations

import socket
import sys

import uvicorn

from producer.server import server_config
from worker.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    (fd,) = argv if argv is not None else sys.argv[1:]
    sock = socket.socket(fileno=int(fd))  # family and protocol read from the socket itself
    settings = get_settings()
    # The bounds of `producer.server` (header timeout, connection limit); the socket is ours.
    config = server_config(settings, settings.api_host, settings.api_port)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
