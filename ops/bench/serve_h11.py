"""Serve an async function as the functions-framework CLI does, on uvicorn's h11 worker.

`python -m ops.bench.ingest --stack h11` compares the server stack the CLI picks
(httptools and uvloop, when installed) with plain h11 and asyncio: the same app
(`functions_framework.create_app`) and the same gunicorn application class, only
the worker differs. Usage: python -m ops.bench.serve_h11 TARGET SOURCE PORT
"""

from __future__ import annotations

import sys

import functions_framework
from functions_framework._http.gunicorn import UvicornApplication

from ops.defaults import LOOPBACK


def main() -> None:
    target, source, port = sys.argv[1:4]
    app = functions_framework.create_app(target, source)  # type: ignore[no-untyped-call]
    server = UvicornApplication(  # type: ignore[no-untyped-call]
        app, LOOPBACK, int(port), False, worker_class="uvicorn_worker.UvicornH11Worker"
    )
    server.run()


if __name__ == "__main__":
    main()
