"""An SMPP 3.4 SMSC stand-in for tests (`tests.smpp.smsc`) and its PDU codec (`tests.smpp.pdu`)."""
