"""Linearizability of a recorded key-value history, checked with `detangle.lin`.

A history is what clients saw: for each operation its invocation and its completion (with
the value read, or an acknowledgement), or no completion at all (an unknown outcome: the
client timed out or its node crashed; the operation may or may not have taken effect).
Invocations and completions are numbered in one sequence in the order they happened,
which gives the real-time order ("A completed before B was invoked") the check respects.

The check is Wing & Gong search with memoisation, split per key (a key-value map is
P-compositional), as `detangle.lin.KV` implements it. Failed operations (definitely not
applied) are left out. Stale reads are not linearizable by design and are checked by the
weaker `check_stale_reads`: a stale read returns the initial value or a value some write
had been invoked with before the read completed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import attrs
from detangle import lin as dlin

__all__ = ["HistoryRecorder", "LinOp", "LinResult", "check_kv", "check_stale_reads"]

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"
PENDING = "pending"


@attrs.define(eq=False)
class LinOp:
    """One client operation on one key: `write` (value) or `read` (-> output)."""

    index: int
    client: Hashable
    kind: str
    key: str
    value: Any
    invoke_seq: int
    invoke_ns: int
    status: str = PENDING
    output: Any = None
    complete_seq: int | None = None
    complete_ns: int | None = None
    stale: bool = False

    def describe(self) -> str:
        if self.kind == "write":
            text = f"write({self.key!r}, {self.value!r})"
        else:
            text = f"{'stale_read' if self.stale else 'read'}({self.key!r})"
        if self.status == OK:
            text += f" -> {self.output!r}" if self.kind == "read" else " -> ok"
        elif self.status in (UNKNOWN, PENDING):
            text += " -> ?"
        else:
            text += " -> failed"
        span = f"{self.invoke_ns}..{self.complete_ns if self.complete_ns is not None else '?'} ns"
        return f"client {self.client!r}: {text} [{span}]"


@attrs.frozen
class LinResult:
    """Outcome of a check. `ok` is None when the search gave up (budget) without a verdict."""

    ok: bool | None
    operations_checked: int
    keys_checked: int
    explanation: str


class HistoryRecorder:
    """Records operations as they happen. `now_ns` is the caller's clock (virtual in sims)."""

    def __init__(self) -> None:
        self.operations: list[LinOp] = []
        self._seq = 0

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def invoke(
        self, client: Hashable, kind: str, key: str, value: Any, now_ns: int, *, stale: bool = False
    ) -> LinOp:
        if kind not in ("read", "write"):
            raise ValueError(f"operation kind must be 'read' or 'write', got {kind!r}")
        if stale and kind != "read":
            raise ValueError("only a read can be stale")
        op = LinOp(
            len(self.operations), client, kind, key, value, self._next_seq(), now_ns, stale=stale
        )
        self.operations.append(op)
        return op

    def ok(self, op: LinOp, now_ns: int, output: Any = None) -> None:
        self._complete(op, OK, now_ns, output)

    def fail(self, op: LinOp, now_ns: int) -> None:
        """The operation definitely did not take effect (e.g. rejected before proposing)."""
        self._complete(op, FAIL, now_ns, None)

    def unknown(self, op: LinOp, now_ns: int) -> None:
        """The outcome is unknown: the operation may take effect at any later time, or never."""
        self._complete(op, UNKNOWN, now_ns, None)

    def _complete(self, op: LinOp, status: str, now_ns: int, output: Any) -> None:
        if op.status != PENDING:
            raise ValueError(f"operation {op.index} already completed ({op.status})")
        assert now_ns >= op.invoke_ns
        op.status = status
        op.output = output
        op.complete_ns = now_ns
        if status == OK:
            op.complete_seq = self._next_seq()

    def counts(self) -> dict[str, int]:
        counts = {"write": 0, "read": 0, "stale_read": 0, OK: 0, FAIL: 0, UNKNOWN: 0, PENDING: 0}
        for op in self.operations:
            counts["stale_read" if op.stale else op.kind] += 1
            counts[op.status] += 1
        return counts


def _to_detangle(ops: Sequence[LinOp]) -> list[dlin.Operation]:
    converted: list[dlin.Operation] = []
    for op in ops:
        arg: Any
        if op.kind == "write":
            f, arg = "put", (op.key, op.value)
        else:
            f, arg = "get", op.key
        status = {OK: dlin.OK, UNKNOWN: dlin.INFO, PENDING: dlin.INFO, FAIL: dlin.FAIL}[op.status]
        converted.append(
            dlin.Operation(
                index=len(converted),
                process=op.client,
                f=f,
                arg=arg,
                call=op.invoke_seq,
                call_time=float(op.invoke_ns),
                output=op.output if op.status == OK else None,
                status=status,
                ret=op.complete_seq if op.status == OK else None,
                ret_time=float(op.complete_ns) if op.complete_ns is not None else None,
            )
        )
    return converted


def check_kv(
    operations: Sequence[LinOp],
    *,
    initial: dict[str, Any] | None = None,
    budget_steps: int = 2_000_000,
) -> LinResult:
    """Is the history (stale reads excluded) linearizable as a key-value map?"""
    ops = [op for op in operations if not op.stale and op.status != FAIL]
    keys = len({op.key for op in ops})
    model = dlin.KV(initial or {})
    try:
        result = dlin.check(_to_detangle(ops), model, budget=budget_steps)
    except RuntimeError as exc:
        return LinResult(None, len(ops), keys, f"undecided: {exc}")
    if result.ok:
        return LinResult(True, len(ops), keys, result.explain())
    return LinResult(False, len(ops), keys, result.explain())


def check_stale_reads(
    operations: Sequence[LinOp],
    *,
    initial: dict[str, Any] | None = None,
    absent_ok: bool = False,
) -> list[str]:
    """Stale reads that return a value nobody wrote (before the read completed) to that key.

    With `absent_ok`, a stale read may also return None: a lagging replica that has not yet
    applied the key's creation."""
    initial = initial or {}
    # (key, value) -> the first invocation that wrote it; values are hashable scalars.
    first_write_seq: dict[tuple[str, Any], int] = {}
    for op in operations:
        if op.kind == "write":
            first_write_seq.setdefault((op.key, op.value), op.invoke_seq)
    problems: list[str] = []
    for read in operations:
        if not read.stale or read.status != OK:
            continue
        if read.output == initial.get(read.key) or (absent_ok and read.output is None):
            continue
        assert read.complete_seq is not None
        written_seq = first_write_seq.get((read.key, read.output))
        if written_seq is None or written_seq > read.complete_seq:
            problems.append(f"stale read returned a value never written: {read.describe()}")
    return problems
