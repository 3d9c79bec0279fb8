"""Hypothesis state machines: the WAL against a plain model, over SimDisk, with crashes.

The model is a dict seq -> (rtype, body) of every live record plus `durable_seq` (the last
record the WAL promised durable). After any crash and recovery:
* every record up to `durable_seq` is there, with its exact bytes (strict machines);
* records of a flush that was in flight at the crash may be there or not, but only as a
  prefix, and only with their exact bytes;
* nothing unverified is ever returned: any damage is CorruptionError/FormatError or, for
  damage at rest inside the final flush, the absence of that flush's records.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mox.errors import CorruptionError, FormatError
from mox.io.sim import DiskFaults, SimDisk
from mox.io.simloop import VirtualTimeLoop
from mox.storage.wal import Wal

SEGMENT_SIZE = 4096 + 2048
BODY = st.binary(min_size=0, max_size=300)
SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class WalMachine(RuleBasedStateMachine):
    FAULTS = DiskFaults()
    STRICT = True  # every record the WAL called durable survives every crash

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.disk: SimDisk | None = None
        self.wal: Wal | None = None
        self.model: dict[int, tuple[int, bytes]] = {}
        self.durable_seq = 0
        self.next_seq = 1
        self.first_seq = 1
        self.batch_firsts: list[int] = []  # first seq of each durable flush, in order
        self.dead = False  # the WAL reported damage: nothing more to check on this disk

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.disk = SimDisk(random.Random(seed), self.FAULTS)
        self.wal = self.run(self._open())

    async def _open(self) -> Wal:
        assert self.disk is not None
        return await Wal.open(
            self.disk.filesystem("n1"), segment_size_bytes=SEGMENT_SIZE, cluster_id="c", node_id=1
        )

    def teardown(self) -> None:
        if self.wal is not None:
            self.wal.close()
        self.loop.close()

    # -- rules -------------------------------------------------------------------------

    @precondition(lambda self: not self.dead)
    @rule(bodies=st.lists(BODY, min_size=1, max_size=8), rtype=st.integers(0, 65535))
    def append(self, bodies: list[bytes], rtype: int) -> None:
        assert self.wal is not None
        for body in bodies:
            seq = self.wal.append(rtype, body)
            assert seq == self.next_seq
            self.model[seq] = (rtype, body)
            self.next_seq += 1

    @precondition(lambda self: not self.dead)
    @rule()
    def commit(self) -> None:
        assert self.wal is not None
        before = self.wal.flush_count
        pending_first = self.durable_seq + 1
        seqs = list(range(pending_first, self.next_seq))

        async def everyone() -> None:
            assert self.wal is not None
            await asyncio.gather(*(self.wal.commit(seq) for seq in seqs))

        self.run(everyone())
        if seqs:
            assert self.wal.flush_count == before + 1, "one flush for all concurrent committers"
            self.batch_firsts.append(pending_first)
        self.durable_seq = self.next_seq - 1
        assert self.wal.durable_seq == self.durable_seq

    @precondition(lambda self: not self.dead)
    @rule()
    def crash_and_recover(self) -> None:
        assert self.wal is not None and self.disk is not None
        self.wal.close()
        flips_before = self.disk.fault_counts["bit_flip_at_rest"]
        self.disk.crash()
        self._recover(in_flight=0, flips_before=flips_before)

    @precondition(lambda self: not self.dead and self.next_seq - 1 > self.durable_seq)
    @rule(steps=st.integers(0, 6))
    def crash_during_commit(self, steps: int) -> None:
        """Start a flush, let it run `steps` loop iterations, then pull the plug."""
        assert self.wal is not None and self.disk is not None
        in_flight = self.next_seq - 1 - self.durable_seq
        self.batch_firsts.append(self.durable_seq + 1)  # if it became durable, it is last
        task = self.loop.create_task(self.wal.commit())
        for _ in range(steps):
            self.run(asyncio.sleep(0))
        done = task.done()
        flips_before = self.disk.fault_counts["bit_flip_at_rest"]
        self.disk.crash()
        self.wal.close()
        task.cancel()
        self.run(asyncio.gather(task, return_exceptions=True))
        if done and task.exception() is None:
            self.durable_seq = self.next_seq - 1
            in_flight = 0
        self._recover(in_flight=in_flight, flips_before=flips_before)

    @precondition(lambda self: not self.dead)
    @rule(data=st.data())
    def truncate_suffix(self, data: st.DataObject) -> None:
        assert self.wal is not None
        seq = data.draw(st.integers(self.first_seq, self.next_seq), label="truncate at")
        self.run(self.wal.truncate_suffix(seq))
        for s in range(seq, self.next_seq):
            del self.model[s]
        self.next_seq = seq
        self.durable_seq = min(self.durable_seq, seq - 1)
        self.batch_firsts = [b for b in self.batch_firsts if b < seq]
        assert self.wal.last_seq == seq - 1

    @precondition(lambda self: not self.dead)
    @rule(data=st.data())
    def drop_prefix(self, data: st.DataObject) -> None:
        assert self.wal is not None
        seq = data.draw(st.integers(self.first_seq, self.next_seq), label="drop below")
        self.run(self.wal.drop_prefix(seq))
        assert self.first_seq <= self.wal.first_seq <= max(seq, self.first_seq)
        for s in range(self.first_seq, self.wal.first_seq):
            del self.model[s]
        self.first_seq = self.wal.first_seq

    @precondition(lambda self: not self.dead)
    @rule(gap=st.integers(0, 1000))
    def reset(self, gap: int) -> None:
        assert self.wal is not None
        next_seq = self.next_seq + gap
        self.run(self.wal.reset(next_seq))
        self.model.clear()
        self.first_seq = self.next_seq = next_seq
        self.durable_seq = next_seq - 1
        self.batch_firsts = []

    @precondition(lambda self: not self.dead and self.next_seq - 1 == self.durable_seq)
    @rule(
        op=st.sampled_from(["truncate", "drop", "reset"]), steps=st.integers(0, 12), data=st.data()
    )
    def crash_during_maintenance(self, op: str, steps: int, data: st.DataObject) -> None:
        """Crash in the middle of truncate_suffix / drop_prefix / reset: the log is either
        the old one, the new one, or (truncate, drop) a segment-aligned step in between."""
        assert self.wal is not None and self.disk is not None
        old_first, old_last = self.first_seq, self.next_seq - 1
        seq = data.draw(st.integers(self.first_seq, self.next_seq), label="seq")
        coro = {
            "truncate": lambda: self.wal.truncate_suffix(seq),
            "drop": lambda: self.wal.drop_prefix(seq),
            "reset": lambda: self.wal.reset(self.next_seq + seq),
        }[op]()
        task = self.loop.create_task(coro)
        for _ in range(steps):
            self.run(asyncio.sleep(0))
        flips_before = self.disk.fault_counts["bit_flip_at_rest"]
        self.disk.crash()
        self.wal.close()
        task.cancel()
        self.run(asyncio.gather(task, return_exceptions=True))
        try:
            wal = self.run(self._open())
        except (CorruptionError, FormatError):
            assert self._damage_possible(), f"recovery after a crash during {op} failed"
            self.wal, self.dead = None, True
            return
        self.wal = wal
        damaged = self.disk.fault_counts["bit_flip_at_rest"] > flips_before or (
            self.disk.fault_counts["misdirected_write"] > 0
        )
        first, last = wal.first_seq, wal.last_seq
        if op == "reset" and first == self.next_seq + seq:
            assert last == first - 1  # the new, empty log
            self.model.clear()
            self.first_seq = self.next_seq = first
            self.durable_seq = first - 1
            self.batch_firsts = []
            return
        if op == "truncate":
            assert first == old_first
            assert seq - 1 <= last <= old_last or (damaged and last <= old_last), (seq, last)
        elif op == "drop":
            assert old_first <= first <= max(seq, old_first)
            assert last == old_last or (damaged and last <= old_last)
        else:
            assert first == old_first
            assert last == old_last or (damaged and last <= old_last)
        if last >= first:
            try:
                records = wal.read(first, last)
            except CorruptionError:
                assert self._damage_possible()
                self.dead = True
                return
            assert [(r.seq, r.rtype, r.body) for r in records] == [
                (s, *self.model[s]) for s in range(first, last + 1)
            ]
        for s in list(self.model):
            if s < first or s > last:
                del self.model[s]
        self.first_seq, self.next_seq, self.durable_seq = first, last + 1, last
        self.batch_firsts = [b for b in self.batch_firsts if first <= b <= last]

    @precondition(lambda self: not self.dead and self.next_seq > self.first_seq)
    @rule(data=st.data())
    def read_range(self, data: st.DataObject) -> None:
        assert self.wal is not None
        first = data.draw(st.integers(self.first_seq, self.next_seq - 1), label="first")
        last = data.draw(st.integers(first, self.next_seq - 1), label="last")
        try:
            records = self.wal.read(first, last)
        except CorruptionError:
            assert self.disk is not None
            assert self._damage_possible(), "CorruptionError without any injected damage"
            return
        assert [(r.seq, r.rtype, r.body) for r in records] == [
            (s, *self.model[s]) for s in range(first, last + 1)
        ]

    @precondition(lambda self: self.dead)
    @rule(seed=st.integers(0, 2**32 - 1))
    def fresh_disk(self, seed: int) -> None:
        """The damaged disk was reported; carry on with a new one."""
        self.__init__()  # type: ignore[misc]
        self.start(seed)

    # -- checks ------------------------------------------------------------------------

    def _damage_possible(self) -> bool:
        assert self.disk is not None
        counts = self.disk.fault_counts
        return bool(
            counts["bit_flip_at_rest"] or counts["bit_flip_on_read"] or counts["misdirected_write"]
        )

    def _recover(self, in_flight: int, flips_before: int) -> None:
        assert self.disk is not None
        misdirected_before = self.disk.fault_counts["misdirected_write"]
        try:
            self.wal = self.run(self._open())
        except (CorruptionError, FormatError):
            assert self._damage_possible(), "recovery failed without any injected damage"
            self.wal = None
            self.dead = True
            return
        wal = self.wal
        assert wal.first_seq == self.first_seq
        recovered_last = wal.last_seq
        # Lower bound: every durable record, unless damage at rest hit the final flush.
        guaranteed = self.durable_seq
        damaged = (
            self.disk.fault_counts["bit_flip_at_rest"] > flips_before
            or self.disk.fault_counts["misdirected_write"] > 0
            or misdirected_before > 0
        )
        if damaged and not self.STRICT:
            # The last flush that was durable before the crash (not the one in flight).
            durable_batches = [b for b in self.batch_firsts if b <= self.durable_seq]
            last_batch = durable_batches[-1] if durable_batches else self.first_seq
            guaranteed = min(guaranteed, last_batch - 1)
            if self.disk.fault_counts["misdirected_write"]:
                guaranteed = self.first_seq - 1
        assert recovered_last >= guaranteed, (recovered_last, guaranteed)
        assert recovered_last <= self.durable_seq + in_flight, (recovered_last, self.durable_seq)
        # Whatever came back is exactly the model's prefix.
        if recovered_last >= self.first_seq:
            try:
                records = wal.read(self.first_seq, recovered_last)
            except CorruptionError:
                assert self._damage_possible()
                self.dead = True
                return
            assert [(r.seq, r.rtype, r.body) for r in records] == [
                (s, *self.model[s]) for s in range(self.first_seq, recovered_last + 1)
            ]
        for s in range(recovered_last + 1, self.next_seq):
            del self.model[s]
        self.next_seq = recovered_last + 1
        self.durable_seq = recovered_last
        self.batch_firsts = [b for b in self.batch_firsts if b <= recovered_last]

    @invariant()
    def bounds_match(self) -> None:
        if self.dead or self.wal is None:
            return
        assert self.wal.first_seq == self.first_seq
        assert self.wal.last_seq == self.next_seq - 1
        assert self.wal.durable_seq == self.durable_seq


class TornWriteMachine(WalMachine):
    FAULTS = DiskFaults(torn_write_probability=0.7)


class BitFlipAtRestMachine(WalMachine):
    FAULTS = DiskFaults(torn_write_probability=0.3, bit_flip_at_rest_probability=0.3)
    STRICT = False


class BitFlipOnReadMachine(WalMachine):
    FAULTS = DiskFaults(bit_flip_on_read_probability=0.2)


class MisdirectedWriteMachine(WalMachine):
    FAULTS = DiskFaults(misdirected_write_probability=0.05, torn_write_probability=0.3)
    STRICT = False


TestWalCrashes = TornWriteMachine.TestCase
TestWalCrashes.settings = SETTINGS
TestWalBitFlipsAtRest = BitFlipAtRestMachine.TestCase
TestWalBitFlipsAtRest.settings = SETTINGS
TestWalBitFlipsOnRead = BitFlipOnReadMachine.TestCase
TestWalBitFlipsOnRead.settings = SETTINGS
TestWalMisdirectedWrites = MisdirectedWriteMachine.TestCase
TestWalMisdirectedWrites.settings = SETTINGS

SOAK_SETTINGS = settings(
    max_examples=1500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


class TestWalCrashesSoak(TornWriteMachine.TestCase):  # type: ignore[valid-type,misc]
    settings = SOAK_SETTINGS
    pytestmark = pytest.mark.soak


class TestWalBitFlipsAtRestSoak(BitFlipAtRestMachine.TestCase):  # type: ignore[valid-type,misc]
    settings = SOAK_SETTINGS
    pytestmark = pytest.mark.soak


class TestWalMisdirectedWritesSoak(MisdirectedWriteMachine.TestCase):  # type: ignore[valid-type,misc]
    settings = SOAK_SETTINGS
    pytestmark = pytest.mark.soak
