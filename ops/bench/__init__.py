"""Benchmarks of the ingest function against what a user would otherwise run (`make bench-ingest`)."""
