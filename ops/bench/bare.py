"""The benchmark's baselines: Functions Framework HTTP functions that do nothing.

`make bench-ingest` serves each exactly as the ingest function is served (the
functions-framework CLI), so the difference is ingest's own work (verify,
classify, publish, log) and not the server's, the framework's or the load
generator's:
- `bare`: a threaded (Flask, gunicorn gthread) function, what ingest was before;
- `bare_async`: an `@functions_framework.aio.http` function (Starlette, uvicorn
  worker), the stack ingest runs on.
Both leave the body unread on purpose: the baseline is the server's cost alone.
"""

from __future__ import annotations

import flask
import functions_framework
import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response


@functions_framework.http
def bare(request: flask.Request) -> flask.Response:
    del request
    return flask.Response(status=204)


@functions_framework.aio.http
async def bare_async(request: Request) -> Response:
    del request
    return Response(status_code=204)
