"""The function's source archive, built as terraform/ingest.tf builds it, runs on its own.

Terraform zips `local.ingest_source_files` (computed here by Terraform itself) with each file's
text as content, and a root `main.py` whose text is `local.ingest_entry_module`; the runtime then
loads `main.py`, its default source, from the unpacked archive. This test does the same in a
clean process whose only code is the archive, so a missing module or a path that only works in
the repository (or only with the project installed) fails here, not in a deploy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import requests

from ops.defaults import LOOPBACK
from ops.local.processes import Process, free_port, wait_http
from ops.signing import DEV_SECRET
from tests.terraform.module import block, computed, expr, literal, load

ROOT = Path(__file__).resolve().parents[2]


def build_archive(destination: Path) -> None:
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("main.py", computed("local.ingest_entry_module"))
        for name in computed("local.ingest_source_files"):
            # archive_file's `source { content = file(...) }`: the file's text, UTF-8.
            zipped.writestr(name, (ROOT / name).read_text(encoding="utf-8"))


def test_terraform_archives_the_function_from_its_source_list() -> None:
    function = load().resource("google_cloudfunctions2_function", "ingest")
    source = block(block(block(function, "build_config"), "source"), "storage_source")
    assert expr(source["object"]) == "google_storage_bucket_object.ingest_source.name"
    archive = load().data[("archive_file", "ingest_source")]
    [entry] = archive["source"]
    assert expr(entry["content"]) == "local.ingest_entry_module"
    assert literal(entry["filename"]) == "main.py"
    [dynamic] = archive["dynamic"]
    assert expr(dynamic['"source"']["for_each"]) == "local.ingest_source_files"
    assert expr(dynamic['"source"']["content"][0]["content"]) == (
        'file("${path.module}/../${source.value}")'
    )
    obj = load().resource("google_storage_bucket_object", "ingest_source")
    # Named by content hash, so any change to the sources makes a new object and a redeploy.
    assert "data.archive_file.ingest_source.output_sha256" in literal(obj["name"])


def test_the_archive_holds_the_function_the_shared_package_and_requirements_only() -> None:
    files = computed("local.ingest_source_files")
    assert "ingest_fn/main.py" in files
    assert "shared/settings.py" in files
    assert "shared/routing.json" in files
    assert "requirements.txt" in files
    assert not [
        f for f in files if f.split("/")[0] not in {"ingest_fn", "shared", "requirements.txt"}
    ]
    # Everything the function imports from the repository is in it.
    for package in ("ingest_fn", "shared"):
        for path in (ROOT / package).glob("*.py"):
            assert f"{package}/{path.name}" in files


def unpacked_archive(tmp_path: Path) -> Path:
    archive = tmp_path / "source.zip"
    build_archive(archive)
    workspace = tmp_path / "workspace"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(workspace)
    return workspace


def clean_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "GOOGLE_CLOUD_PROJECT": "archive-test",
        "EVENTS_TOPIC": "supaglue-events",
        "QUARANTINE_TOPIC": "supaglue-quarantine",
        "WEBHOOK_SECRETS": DEV_SECRET,
    }


# This venv has the project installed (editable), which would hide a module the archive lacks:
# the deployed function has the archive and the requirements only.
WITHOUT_THE_INSTALLED_PROJECT = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
"""


def test_the_unpacked_archive_loads_and_serves_in_a_clean_process(tmp_path: Path) -> None:
    workspace = unpacked_archive(tmp_path)
    # What the runtime does: functions-framework loads its default source, main.py, and looks
    # up the target, an ASGI function; then one request goes through the app.
    script = (
        WITHOUT_THE_INSTALLED_PROJECT
        + """
import asyncio
import functions_framework, httpx
app = functions_framework.create_app(target="ingest", source="main.py")
async def get():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://function") as client:
        return (await client.get("/")).status_code
print(asyncio.run(get()))
print(sys.modules["shared.settings"].__file__)
for name, module in sorted(sys.modules.items()):
    if name.split(".")[0] in ("ingest_fn", "shared", "handlers", "ops"):
        print("loaded", getattr(module, "__file__", None))
"""
    )
    # -I: no PYTHONPATH, no user site, and not the current directory: only the archive's code
    # (found the way the function finds it) and the installed requirements.
    result = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=workspace,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    loaded = [line.removeprefix("loaded ") for line in lines if line.startswith("loaded ")]
    status, settings_file = [line for line in lines if not line.startswith("loaded ")][-2:]
    assert status == "405"  # the function's own answer to GET: it loaded and served
    assert Path(settings_file).resolve().is_relative_to(workspace.resolve())
    # Every module of the project it loaded came from the archive.
    assert loaded
    assert all(Path(path).resolve().is_relative_to(workspace.resolve()) for path in loaded), loaded


def test_the_unpacked_archive_serves_under_the_asgi_server_in_a_clean_process(
    tmp_path: Path,
) -> None:
    """The functions-framework CLI, as the runtime starts it: gunicorn and a uvicorn worker."""
    workspace = unpacked_archive(tmp_path)
    port = free_port()
    args = ["--target=ingest", "--source=main.py", f"--host={LOOPBACK}", f"--port={port}"]
    script = (
        WITHOUT_THE_INSTALLED_PROJECT
        + f"""
from functions_framework._cli import _cli
sys.argv = ["functions-framework", *{args!r}]
_cli()
"""
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-I", "-c", script], cwd=workspace, env=clean_env(), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = Process("archive", popen, log)
    try:
        wait_http(server, f"http://{LOOPBACK}:{port}/", statuses=[405])
        response = requests.get(f"http://{LOOPBACK}:{port}/", timeout=5)
        assert response.headers["server"] == "uvicorn"
        assert response.json()["error"] == "method_not_allowed"
    finally:
        server.stop()
