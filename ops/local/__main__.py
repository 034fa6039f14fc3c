"""`python -m ops.local`: `make run` (see ops/local/run.py)."""

from ops.local.run import main

raise SystemExit(main())
