"""Carrier adapters: one module per carrier, one interface (`base.Carrier`)."""
