"""`python -m ops`: the operator CLI (see ops/cli/main.py)."""

from ops.cli.main import main

raise SystemExit(main())
