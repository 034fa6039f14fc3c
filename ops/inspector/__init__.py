"""A read-only page on loopback: recent webhooks and each one's journey through the pipeline."""
