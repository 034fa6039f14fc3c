"""An emulator never mistakes another process's listener on its port for itself: on a shared
machine another run's server may take a free port between the pick and the bind."""

from __future__ import annotations

import socket

import pytest

from ops.defaults import LOOPBACK
from ops.local import emulators
from ops.local.processes import PortTaken, free_port

pytestmark = pytest.mark.integration


def test_a_port_another_process_listens_on_is_refused_and_a_picked_one_picked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind((LOOPBACK, 0))
        other.listen()
        taken = other.getsockname()[1]
        with pytest.raises(PortTaken, match=f"port {taken} is held by another process"):
            emulators.start_tasks(port=taken)
        picks = iter([taken, free_port()])
        monkeypatch.setattr(emulators, "free_port", lambda: next(picks))
        emulator = emulators.start_tasks()
        try:
            assert emulator.port != taken
            assert emulator.running()
        finally:
            emulator.stop()
