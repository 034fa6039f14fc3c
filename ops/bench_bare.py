"""The benchmark's baseline: a Functions Framework HTTP function that does nothing.

`make bench-ingest` serves it exactly as it serves the ingest function, so the
difference between the two is the cost of ingest's own work (verify, classify,
publish, log) and not of the server, Flask or the load generator.
"""

from __future__ import annotations

import flask
import functions_framework


@functions_framework.http
def bare(request: flask.Request) -> flask.Response:
    # The body is left unread on purpose: the floor is the server's cost alone.
    del request
    return flask.Response(status=204)
