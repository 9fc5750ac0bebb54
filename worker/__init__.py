"""smsq worker: encoding, segmentation, carrier submission and delivery receipts."""
