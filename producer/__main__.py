"""`python -m producer …` runs the `smsq` CLI."""

from producer.cli import main

main()
