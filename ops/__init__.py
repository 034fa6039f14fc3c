"""What operators and developers run beside the deployables.

cli/          the operator CLI, `python -m ops`
local/        the local stack: emulators, topology, processes (`make run`, the tests)
bench/        benchmarks, scripts that print figures (`make bench`)
reliability/  the reliability suite (`make reliability`)
The modules here are what more than one of those use: the local stack's default
addresses, webhook signing, Pub/Sub admin clients, and Terraform without an install.
"""
