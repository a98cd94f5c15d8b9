"""The `audiostyle` command: `main` and one module per user job (only argparse at import time)."""
