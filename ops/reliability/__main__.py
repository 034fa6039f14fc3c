"""`python -m ops.reliability`: the full reliability suite (see ops/reliability/suite.py)."""

from ops.reliability.suite import main

raise SystemExit(main())
