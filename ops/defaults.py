"""Where `make run` listens and which project it uses: the local stack binds these, and the
operator CLI's defaults point at them, so that its commands reach a running `make run`."""

from __future__ import annotations

from typing import Final

LOOPBACK: Final = "127.0.0.1"
# The emulators namespace resources by project only; a fixed one lets the CLI find them.
LOCAL_PROJECT: Final = "local-dev"
INGEST_PORT: Final = 8080
PUBSUB_PORT: Final = 8085
FIRESTORE_PORT: Final = 8086
TASKS_PORT: Final = 8123
# The fake Supaglue management API the local reconciler reads (ops/local/fake_supaglue.py).
SUPAGLUE_PORT: Final = 8099
# The fake's own endpoints (runs, connections, faults), beside the API it fakes.
SUPAGLUE_ADMIN_PATH: Final = "/_fake"
# The handler services listen on their routing table's local_port, shifted by the base port:
# 8090 leaves them where the table puts them.
HANDLERS_BASE_PORT: Final = 8090

# The inspector (ops/inspector/): a read-only page of each webhook's journey.
INSPECTOR_PORT: Final = 8088

# `ops receive`: a stand-in for Slack or any endpoint your hooks call.
RECEIVE_PORT: Final = 9999

INGEST_URL: Final = f"http://{LOOPBACK}:{INGEST_PORT}/"
PUBSUB_HOST: Final = f"{LOOPBACK}:{PUBSUB_PORT}"
FIRESTORE_HOST: Final = f"{LOOPBACK}:{FIRESTORE_PORT}"
SUPAGLUE_URL: Final = f"http://{LOOPBACK}:{SUPAGLUE_PORT}"
