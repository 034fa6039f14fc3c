"""`python -m ops`: the operator CLI (see ops/cli.py)."""

from ops.cli import main

raise SystemExit(main())
