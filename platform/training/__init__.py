"""One experiment as a Ray Train run: the driver (caller's process), the per-rank worker loop, and what they share."""
