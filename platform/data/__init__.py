"""The data job: instrument datasets made ready for training (datasets/ ingest, then stats/ statistics)."""
