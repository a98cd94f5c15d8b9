"""Bundles: a checkpoint exported as a self-contained folder, and loading one without Ray or data."""
