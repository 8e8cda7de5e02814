"""The engine's event log: one JSON line per start, change, rewind and failed block, keyed by block index,
so `replay` rebuilds the same samples offline. A full disk must not stop the sound: a write that fails ends
the log (its last line says how far it got) and the error is kept for `status()`.
"""

from __future__ import annotations

import json
from collections.abc import MutableSequence
from pathlib import Path
from typing import IO, Any

from .stream import StreamParams


def json_safe(value: Any) -> Any:
    """A change's value as JSON can hold it."""
    return value.to_dict() if isinstance(value, StreamParams) else value


class EventLog:
    """Writes events to `path` (None: nowhere). Errors go to `errors`, never up into the engine."""

    def __init__(self, path: str | Path | None, errors: MutableSequence[str]) -> None:
        self.path = Path(path) if path else None
        self.errors = errors
        self._file: IO[str] | None = None

    def open(self, start: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w")  # noqa: SIM115 - closed in close()
        self.write(start)

    def write(self, event: dict) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(event) + "\n")
            self._file.flush()
        except (OSError, ValueError) as e:
            self.errors.append(f"event log: {e}")
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
