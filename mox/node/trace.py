"""Trace output: NDJSON lines, one per spec action, numbered and time-stamped.

Cores and the simulated network emit events as plain dicts (`node`, `action`, `msg`,
`args`, `state`; format in specs/README.md). A `TraceLog` gives each event its place: `i`,
one sequence shared by every writer of the same trace (all nodes of a simulated cluster
write one file, so `i` orders the whole run), and `t_ns` from the log's clock. The first
line may be a header (`{"header": {...}}`) saying what run wrote the trace.

Serialisation is canonical (fixed key order as built, no spaces, bytes as hex), so a seed
reproduces the trace byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

from mox.io.interfaces import Clock

__all__ = ["TraceLog", "encode_line"]

TRACE_FORMAT_VERSION = 1


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, tuple | frozenset):
        return list(value)
    raise TypeError(f"trace value of type {type(value).__name__} is not JSON-serialisable")


def encode_line(obj: Any) -> str:
    """One canonical NDJSON line (without the newline)."""
    return json.dumps(obj, separators=(",", ":"), default=_default, ensure_ascii=True)


class TraceLog:
    """Numbers, stamps and stores (or writes) trace events.

    `keep_lines` keeps every line in memory (`lines`), which the simulator hashes and
    writes out on a violation; `out` streams them to a text file as they come.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        out: IO[str] | None = None,
        keep_lines: bool = True,
        observer: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._clock = clock
        self._out = out
        self._keep_lines = keep_lines
        self._observer = observer
        self.lines: list[str] = []
        self.events_count = 0

    def header(self, header: dict[str, Any]) -> None:
        """The first line: what run wrote this trace."""
        assert self.events_count == 0, "the header comes first"
        assert not self.lines
        body = {"version": TRACE_FORMAT_VERSION, "protocol": "raft", **header}
        self._write(encode_line({"header": body}))

    def emit(self, event: dict[str, Any]) -> None:
        """Add `i` and `t_ns` in front of the event's own keys and write it."""
        assert "action" in event, event
        self.events_count += 1
        line_obj: dict[str, Any] = {"i": self.events_count, "t_ns": self._clock.monotonic_ns()}
        line_obj.update(event)
        if self._observer is not None:
            self._observer(line_obj)
        self._write(encode_line(line_obj))

    def _write(self, line: str) -> None:
        if self._keep_lines:
            self.lines.append(line)
        if self._out is not None:
            self._out.write(line)
            self._out.write("\n")

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)
