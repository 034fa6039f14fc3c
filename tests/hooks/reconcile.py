"""A cleanup hook that counts its runs in Firestore, where the reconciler tests read them."""

from __future__ import annotations

import os

from google.cloud import firestore

from handlers.hooks import DeletedConnection, hooks
from handlers.store import doc_id

CLEANUPS = "test_cleanups"


@hooks.cleanup()
def count_cleanup(connection: DeletedConnection) -> None:
    # The services of the reconciler's test stack use a database of their own.
    client = firestore.Client(database=os.environ.get("FIRESTORE_DATABASE", "(default)"))
    ref = client.collection(CLEANUPS).document(
        doc_id(connection.customer_id, connection.provider_name)
    )
    ref.set({"runs": firestore.Increment(1), "connection_id": connection.connection_id}, merge=True)
