"""SMPP 3.4: the codec (`pdu`), the connector process that holds the binds (`connector`,
`session`), the Redis stream workers hand segments to it through (`queue`), and what its
PDUs mean for segments (`submit`, `inbound`, `statuses`). Workers never speak SMPP: the
`smpp` carrier adapter (`worker.carriers.smpp`) only queues a ready `submit_sm` body."""
