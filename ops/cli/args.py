"""What the CLI's commands share in their argument parsing."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

# Subscripted only for the type checker: the class itself is not generic at run time.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# A command's handler: the parsed arguments in, the exit code out.
Handler = Callable[[argparse.Namespace], int]


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
