"""`make run`'s own parts, without starting anything: ports, banner, the services' settings."""

from __future__ import annotations

import base64
import shlex
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from ops import defaults
from ops.cli.send import SECRET_ENV
from ops.local.processes import free_ports
from ops.local.run import Ports, RunConfig, banner, ensure_port_free, parse_args
from ops.local.stack import (
    Emulators,
    StackSpec,
    handler_argv,
    handler_env,
    ingest_argv,
    ingest_env,
    inspector_env,
    with_hook_events,
)
from ops.signing import DEV_SECRET
from shared.routing import load_table
from shared.settings import HandlerSettings

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()


def fake_emulators(pubsub: int, firestore: int, tasks: int) -> Emulators:
    """Only their addresses: what the settings are computed from."""
    return cast(
        Emulators,
        SimpleNamespace(
            pubsub=SimpleNamespace(host_port=f"127.0.0.1:{pubsub}"),
            firestore=SimpleNamespace(host_port=f"127.0.0.1:{firestore}"),
            tasks=SimpleNamespace(host_port=f"127.0.0.1:{tasks}"),
        ),
    )


def test_a_busy_port_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} \\(ingest\\) is already in use"):
            ensure_port_free(port, "ingest", "--ingest-port")


def test_the_banner_commands_target_a_non_default_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setenv(SECRET_ENV, OTHER_SECRET)
    text = banner(RunConfig(Ports(pubsub=9085, ingest=9080, firestore=9086, tasks=9123)))
    sends = [
        shlex.split(line.split("&&")[-1]) for line in text.splitlines() if " -m ops send " in line
    ]
    # A sync failure, a mapping change that starts a backfill, a connection's lifecycle.
    assert [args[args.index("send") + 1] for args in sends] == [
        "sync.complete",
        "object.field_mapping.created",
        "connection.created",
        "connection.deleted",
    ]
    for send_args in sends:
        assert send_args[send_args.index("--url") + 1] == "http://127.0.0.1:9080/"
        assert send_args[send_args.index("--secret") + 1] == DEV_SECRET
    [watch_line] = [line for line in text.splitlines() if " -m ops watch" in line]
    assert "--emulator-host 127.0.0.1:9085" in watch_line
    [status_line] = [line for line in text.splitlines() if " -m ops status" in line]
    assert "--firestore-host 127.0.0.1:9086" in status_line
    assert "127.0.0.1:9123" in text


def test_the_banner_names_every_service_and_always_points_status_at_the_emulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", SECRET_ENV):
        monkeypatch.delenv(name, raising=False)
    text = banner(RunConfig())
    for name, service in load_table().services.items():
        assert f"{name} " in text
        assert f"http://127.0.0.1:{service.local_port}" in text
    assert "http://127.0.0.1:8080/" in text
    [inspector_line] = [line for line in text.splitlines() if line.startswith("  inspector ")]
    assert "http://127.0.0.1:8088/" in inspector_line
    assert "--url" not in text  # the defaults need no flags
    [status_line] = [line for line in text.splitlines() if " -m ops status" in line]
    # Without an emulator host `status` would read a real project's Firestore.
    assert "--firestore-host 127.0.0.1:8086" in status_line


# --- the local stack's layout ------------------------------------------------


def test_the_local_stack_runs_every_service_of_the_routing_table() -> None:
    assert RunConfig().spec().service_ports.keys() == load_table().services.keys()


def test_default_ports_are_fixed_and_distinct() -> None:
    ports = parse_args([]).ports
    assert {
        "ingest": ports.ingest,
        "pubsub": ports.pubsub,
        "firestore": ports.firestore,
        "tasks": ports.tasks,
        "supaglue": ports.supaglue,
        "inspector": ports.inspector,
        **ports.services(),
    } == {
        "ingest": 8080,
        "pubsub": 8085,
        "firestore": 8086,
        "tasks": 8123,
        "alerts": 8091,
        "connections": 8092,
        "transforms": 8093,
        "backfills": 8094,
        "backfill-worker": 8095,
        "hooks": 8096,
        "reconciler": 8098,
        "supaglue": 8099,
        "inspector": 8088,
    }


def test_ports_and_log_dir_follow_the_environment_and_flags_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOCAL_FIRESTORE_PORT", "9186")
    monkeypatch.setenv("LOCAL_TASKS_PORT", "9123")
    monkeypatch.setenv("LOCAL_HANDLERS_BASE_PORT", "9200")
    monkeypatch.setenv("LOCAL_LOG_DIR", str(tmp_path))
    config = parse_args(["--tasks-port", "9124"])
    assert (config.ports.firestore, config.ports.tasks) == (9186, 9124)
    assert config.spec().service_url("backfill-worker") == "http://127.0.0.1:9205"
    assert config.log_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    "argv",
    [
        ["--firestore-port", "8085"],  # the Pub/Sub emulator's
        ["--handlers-base-port", "8079"],  # alerts would take ingest's 8080
        ["--handlers-base-port", "65534"],  # no room for the services above it
        ["--tasks-port", "0"],
    ],
)
def test_clashing_or_impossible_ports_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2


def test_services_get_the_test_stacks_settings_and_the_local_worker_url() -> None:
    config = RunConfig(Ports(handlers_base=9000, firestore=9001, tasks=9002))
    spec = config.spec()
    env = handler_env(spec, fake_emulators(8085, 9001, 9002))
    assert env["BACKFILL_WORKER_URL"] == "http://127.0.0.1:9005"
    assert env["FIRESTORE_EMULATOR_HOST"] == "127.0.0.1:9001"
    assert env["CLOUD_TASKS_EMULATOR_HOST"] == "127.0.0.1:9002"
    assert env["PUSH_AUTH_DISABLED"] == "true"
    assert env["TOPIC_PREFIX"] == "supaglue"
    assert env["HOOK_MODULES"] == "hooks.contacts"
    assert (env["TASKS_LOCATION"], env["TASKS_QUEUE"]) == ("local", "supaglue-backfills")
    assert "SERVICE" not in env  # set per service
    # Loopback only.
    assert f"--bind=127.0.0.1:{spec.service_ports['backfills']}" in handler_argv(
        spec.service_ports["backfills"]
    )
    assert "--host=127.0.0.1" in ingest_argv(8080)
    # The inspector reads what the services keep: their project, names, routes and emulators.
    assert inspector_env(spec, fake_emulators(8085, 9001, 9002)) == {
        name: env[name]
        for name in (
            "GOOGLE_CLOUD_PROJECT",
            "TOPIC_PREFIX",
            "HOOK_EVENTS",
            "FIRESTORE_EMULATOR_HOST",
            "PUBSUB_EMULATOR_HOST",
        )
    }
    assert ingest_env(spec, fake_emulators(8085, 9001, 9002))["PUBSUB_EMULATOR_HOST"] == (
        "127.0.0.1:8085"
    )
    assert defaults.LOOPBACK == "127.0.0.1"


def test_env_local_chooses_the_hook_modules_and_reaches_every_service(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    env_file.write_text(
        "# a comment\nHOOK_MODULES=hooks.contacts,hooks.notify\n"
        "NOTIFY_SLACK_WEBHOOK_URL=http://127.0.0.1:9999/slack\nNOTIFY_CHANNEL='#crm'\n"
    )
    config = parse_args(["--env-file", str(env_file)])
    spec = config.spec()
    assert spec.hook_modules == "hooks.contacts,hooks.notify"
    assert spec.extra_env == {
        "NOTIFY_SLACK_WEBHOOK_URL": "http://127.0.0.1:9999/slack",
        "NOTIFY_CHANNEL": "#crm",
    }
    # The hooks route receives what notify's `on` hook wants, as hook_events would say.
    assert spec.routing.routes["hooks"].event_types == ("sync.paused",)
    env = handler_env(spec, fake_emulators(8085, 8086, 8123))
    assert env["HOOK_EVENTS"] == "sync.paused"
    assert env["NOTIFY_CHANNEL"] == "#crm"


def test_without_env_local_make_run_loads_the_example_that_needs_no_settings(
    tmp_path: Path,
) -> None:
    config = parse_args(["--env-file", str(tmp_path / "missing")])
    assert (config.hook_modules, config.spec().extra_env) == ("hooks.contacts", {})


def test_free_ports_are_distinct_because_each_stays_bound_until_all_are_picked() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64


def test_free_ports_skip_what_they_must_avoid(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel offers 40001 first; it is a service's port, so it is passed over.
    offered = iter([40001, 40002, 40003])

    class Offered(socket.socket):
        def bind(self, address: object) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", Offered)
    assert free_ports(2, avoid={40001}) == [40002, 40003]


def test_a_stack_on_free_ports_gets_one_port_per_part() -> None:
    spec = StackSpec.on_free_ports(
        "p", Path("/tmp"), hook_modules="", with_ingest=True, with_inspector=True
    )
    ports = [*spec.service_ports.values(), spec.ingest_port, spec.inspector_port]
    assert None not in ports
    assert len(set(ports)) == len(load_table().services) + 2


def test_the_stack_reads_hook_modules_as_the_services_do() -> None:
    """Separated by commas, spaces or both, as HandlerSettings splits HOOK_MODULES."""
    spaced = with_hook_events(load_table(), "hooks.contacts, hooks.notify")
    assert spaced == with_hook_events(load_table(), "hooks.contacts,hooks.notify")
    assert HandlerSettings(
        google_cloud_project="p",
        service="hooks",
        push_auth_disabled=True,
        hook_modules="hooks.contacts, hooks.notify",
    ).hook_modules == ("hooks.contacts", "hooks.notify")
