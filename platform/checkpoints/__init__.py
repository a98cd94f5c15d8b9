"""Training checkpoints: the on-disk format (written by worker rank 0) and the index that finds and ranks them."""
