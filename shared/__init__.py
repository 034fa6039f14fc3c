"""Code shared by the ingest function and the handler services.

Event models, settings, structured logging, the Pub/Sub message contract and
the routing table. Nothing here opens a network connection at import time.
"""
