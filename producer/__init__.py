"""smsq producer: the HTTP API, the Python producer library and the `smsq` CLI."""
