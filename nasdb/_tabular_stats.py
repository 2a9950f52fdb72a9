"""Recorded shape and noise ceiling of each tabular-suite candidate (generated)."""

STATS = {}
