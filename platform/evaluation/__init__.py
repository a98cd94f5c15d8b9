"""Scoring a bundle on the paired test split beside baselines: metrics, timbre classifier, HTML report."""
