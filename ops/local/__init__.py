"""The local stack: the emulators, the Pub/Sub topology and the processes of `make run` and the tests."""
