"""Operator tooling beside the deployables: the local stack, benchmarks, the CLI."""
