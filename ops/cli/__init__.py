"""The operator CLI, `python -m ops`: send signed webhooks, watch topics, inspect and replay dead letters, show state."""
