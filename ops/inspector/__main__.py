"""`python -m ops.inspector`: the page alone, against the emulators or a real project."""

from ops.inspector.app import main

raise SystemExit(main())
