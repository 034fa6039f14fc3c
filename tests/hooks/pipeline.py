"""Hooks whose behaviour the pipeline tests choose through the object's name.

They run inside separate handler processes, so they keep what the tests
check (attempt counts) in Firestore, where both sides can see it.
"""

from __future__ import annotations

from google.cloud import firestore

from handlers.hooks import PermanentError, RetryableError, TransformRun, hooks
from handlers.store import doc_id

ATTEMPTS = "test_hook_attempts"


def _count_attempt(run: TransformRun) -> int:
    ref = firestore.Client().collection(ATTEMPTS).document(doc_id(run.customer_id, run.run_id))
    ref.set({"attempts": firestore.Increment(1)}, merge=True)
    return int((ref.get().to_dict() or {})["attempts"])


@hooks.transform("flaky")
def fails_twice(run: TransformRun) -> str | None:
    if _count_attempt(run) <= 2:
        raise RetryableError("the destination is not reachable yet")
    return f"after-{run.run_id}"


@hooks.transform("poison")
def always_refuses(run: TransformRun) -> str | None:
    _count_attempt(run)
    raise PermanentError("this object can never be transformed")


@hooks.transform("counted")
def counts(run: TransformRun) -> str | None:
    _count_attempt(run)
    return run.run_id
