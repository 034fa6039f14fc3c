"""Benchmarks: scripts that print figures, each run side by side with its baseline (`make bench`)."""
