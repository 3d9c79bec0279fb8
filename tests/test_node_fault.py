"""A node whose disk returns damaged data stops for good (fail-stop) and says where.

The node runs on the simulated disk in virtual time; the damage is one flipped bit at a
known place of a real file of the node (an SSTable data block, a WAL record, the snapshot
file). Each test shows the damage is met, reported with its file and offset, and that the
node then neither serves nor takes part in anything.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mox.errors import StorageFaultError
from mox.io.sim import SimClock, SimDisk, SimRandom
from mox.io.simloop import VirtualTimeLoop
from mox.node.errors import NodeStopped
from mox.node.runtime import Node, NodeConfig
from mox.node.snapshot_file import SNAPSHOT_FILE
from mox.sim.network import SimNetwork
from mox.statemachine.commands import (
    CreateTenant,
    GetTalent,
    NewApiKey,
    RegisterTalent,
    decode_result,
    encode_command,
    encode_query,
    make_command,
)
from mox.storage.lsm import LsmOptions
from mox.storage.record import SEGMENT_HEADER_SIZE_BYTES

TENANT = "tenant1"


class Events:
    """A structured logger that keeps what the node logs."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, /, **fields: Any) -> None:
        self.records.append(("info", event, fields))

    def error(self, event: str, /, **fields: Any) -> None:
        self.records.append(("error", event, fields))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _level, name, fields in self.records if name == event]


def _config(*, snapshot_threshold_entries: int = 100_000) -> NodeConfig:
    return NodeConfig(
        node_id=1,
        members=(1,),
        cluster_id="faults",
        snapshot_threshold_entries=snapshot_threshold_entries,
        wal_segment_size_bytes=1024 * 1024,
        # Tiny memtable and no block cache: data reaches SSTables soon, and every read of
        # it goes to the disk (where the damage is).
        lsm_options=LsmOptions(memtable_size_bytes=2048, block_cache_blocks=0),
    )


async def _open(disk: SimDisk, network: SimNetwork, events: Events, config: NodeConfig) -> Node:
    return await Node.open(
        config,
        fs=disk.filesystem(),
        transport=network.endpoint(1),
        clock=SimClock(),
        rng=SimRandom(random.Random(7)),
        logger=events,
    )


async def _until_leader(node: Node) -> None:
    for _ in range(1000):
        if node.is_leader:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a single node did not elect itself")


async def _write_talents(node: Node, count: int) -> None:
    seq = 1
    tenant = make_command(
        CreateTenant(
            slug="faults",
            name="Faults",
            owner_key=NewApiKey(key_id="k", secret_sha256="0" * 64, scopes=["talents:read"]),
        ),
        tenant_id=TENANT,
        client_id="c",
        request_seq=seq,
    )
    assert decode_result(await node.submit(encode_command(tenant))).ok
    for k in range(count):
        seq += 1
        register = make_command(
            RegisterTalent(talent_id=f"talent{k}", display_name=f"name {k} " + "x" * 150),
            tenant_id=TENANT,
            client_id="c",
            request_seq=seq,
        )
        assert decode_result(await node.submit(encode_command(register))).ok


def _query(k: int) -> bytes:
    return encode_query(TENANT, GetTalent(talent_id=f"talent{k}"))


def _run(scenario: Callable[[SimDisk, SimNetwork], Awaitable[None]]) -> None:
    loop = VirtualTimeLoop()
    try:
        disk = SimDisk(random.Random(1))
        network = SimNetwork(SimRandom(random.Random(2)))
        loop.run_until_complete(scenario(disk, network))
    finally:
        loop.close()


def _tables(disk: SimDisk) -> list[str]:
    """The live tables (durable, and not removed since)."""
    fs = disk.filesystem()
    return [
        p
        for p in disk.durable_paths()
        if p.startswith("lsm/") and p.endswith(".sst") and fs.exists(p)
    ]


def test_a_stale_read_of_a_damaged_block_stops_the_node_and_names_file_and_offset() -> None:
    events = Events()
    seen: dict[str, Any] = {}

    async def scenario(disk: SimDisk, network: SimNetwork) -> None:
        node = await _open(disk, network, events, _config())
        task = node.start()
        await _until_leader(node)
        await _write_talents(node, 40)
        await asyncio.sleep(0.2)  # let the memtable flush into tables
        tables = _tables(disk)
        assert tables, "the test needs data in SSTables"
        # The answer before the damage: the value, read through the table.
        before = decode_result(await node.read(_query(0), linearizable=False))
        assert before.ok
        # Damage every block of every table: a bit every 256 bytes.
        for path in tables:
            for position in range(5, disk.filesystem().open(path).size(), 256):
                disk.flip_bit(path, 8 * position)
        seen["flips"] = [(path, offset) for _kind, path, offset in disk.fault_log]
        sent_before = node.stats.messages_sent
        with pytest.raises(NodeStopped):
            await node.read(_query(0), linearizable=False)
        seen["fault"] = node.storage_fault
        seen["tables"] = tables
        # It serves nothing more, of any kind.
        with pytest.raises(NodeStopped):
            await node.read(_query(1), linearizable=False)
        with pytest.raises(NodeStopped):
            await node.submit(b"anything")
        await asyncio.sleep(1.0)  # ticks would elect, heartbeat, ... if it still ran
        assert node.stats.messages_sent == sent_before
        assert task.done()
        await node.stop()  # closes the files; does not raise
        seen["stopped"] = node.stopped

    _run(scenario)
    fault = seen["fault"]
    assert isinstance(fault, StorageFaultError)
    assert fault.path in seen["tables"]
    # The offset is the start of the block holding a flipped bit (blocks are ~4 KiB).
    assert any(
        path == fault.path and 0 <= offset - fault.offset < 4096 + 1024
        for path, offset in seen["flips"]
    )
    assert "checksum" in fault.problem
    assert seen["stopped"]
    (logged,) = events.named("node.storage_fault")
    assert logged["path"] == fault.path
    assert logged["offset"] == fault.offset
    assert logged["during"] == "stale read"


def test_damage_met_by_the_run_task_stops_the_node_cleanly() -> None:
    """A snapshot reads the whole state store: a damaged block there stops the run task
    without an exception (the task ends; `storage_fault` says why)."""
    events = Events()
    seen: dict[str, Any] = {}

    async def scenario(disk: SimDisk, network: SimNetwork) -> None:
        node = await _open(disk, network, events, _config(snapshot_threshold_entries=30))
        task = node.start()
        await _until_leader(node)
        await _write_talents(node, 20)
        await asyncio.sleep(0.2)
        tables = _tables(disk)
        assert tables
        for path in tables:
            for position in range(5, disk.filesystem().open(path).size(), 256):
                disk.flip_bit(path, 8 * position)
        # Reaching the threshold makes the node snapshot: it reads every table.
        with pytest.raises(NodeStopped):
            await _write_talents_from(node, 20, 40)
        for _ in range(100):
            if task.done():
                break
            await asyncio.sleep(0.01)
        seen["task_done"] = task.done()
        seen["exception"] = task.exception() if task.done() and not task.cancelled() else None
        seen["fault"] = node.storage_fault
        seen["taken"] = node.stats.snapshots_taken
        await node.stop()

    _run(scenario)
    assert seen["task_done"]
    assert seen["exception"] is None
    fault = seen["fault"]
    assert isinstance(fault, StorageFaultError)
    assert fault.path.startswith("lsm/")
    assert seen["taken"] == 0
    (logged,) = events.named("node.storage_fault")
    assert logged["during"] == "run"
    assert logged["path"] == fault.path


async def _write_talents_from(node: Node, first: int, end: int) -> None:
    for k in range(first, end):
        register = make_command(
            RegisterTalent(talent_id=f"talent{k}", display_name=f"name {k}"),
            tenant_id=TENANT,
            client_id="c",
            request_seq=2 + k,
        )
        await node.submit(encode_command(register))


def test_a_damaged_wal_record_stops_recovery_with_file_and_offset() -> None:
    events = Events()
    seen: dict[str, Any] = {}

    async def scenario(disk: SimDisk, network: SimNetwork) -> None:
        node = await _open(disk, network, events, _config())
        node.start()
        await _until_leader(node)
        await _write_talents(node, 10)  # one flush per command: the first is not the last
        await node.stop()
        (segment,) = [p for p in disk.durable_paths() if p.startswith("wal/")]
        # A bit inside the first record (its header starts right after the segment's).
        disk.flip_bit(segment, 8 * (SEGMENT_HEADER_SIZE_BYTES + 20))
        seen["segment"] = segment
        with pytest.raises(StorageFaultError) as raised:
            await _open(disk, network, events, _config())
        seen["fault"] = raised.value

    _run(scenario)
    fault = seen["fault"]
    assert fault.path == seen["segment"]
    assert fault.offset == SEGMENT_HEADER_SIZE_BYTES
    assert fault.exit_code == 3
    assert f"{seen['segment']} at offset {SEGMENT_HEADER_SIZE_BYTES}" in str(fault)
    (logged,) = events.named("node.storage_fault")
    assert logged["during"] == "recovery"
    assert logged["offset"] == SEGMENT_HEADER_SIZE_BYTES


def test_a_damaged_snapshot_file_stops_recovery() -> None:
    events = Events()
    seen: dict[str, Any] = {}

    async def scenario(disk: SimDisk, network: SimNetwork) -> None:
        node = await _open(disk, network, events, _config(snapshot_threshold_entries=10))
        node.start()
        await _until_leader(node)
        await _write_talents(node, 15)
        await asyncio.sleep(0.1)
        seen["taken"] = node.stats.snapshots_taken
        await node.stop()
        disk.flip_bit(SNAPSHOT_FILE, 8 * 40)  # inside the body (header: 16 bytes)
        with pytest.raises(StorageFaultError) as raised:
            await _open(disk, network, events, _config(snapshot_threshold_entries=10))
        seen["fault"] = raised.value

    _run(scenario)
    assert seen["taken"] >= 1
    (taken, *_rest) = events.named("node.snapshot_taken")
    assert taken["index"] >= 10
    assert taken["size_bytes"] > 0
    fault = seen["fault"]
    assert fault.path.endswith(SNAPSHOT_FILE)
    assert fault.offset == 16
    assert "checksum" in fault.problem


def test_one_damaged_superblock_copy_is_repaired_not_fatal() -> None:
    """Superblock copies exist for this: one bad copy is rewritten at open, no fail-stop."""
    events = Events()
    seen: dict[str, Any] = {}

    async def scenario(disk: SimDisk, network: SimNetwork) -> None:
        node = await _open(disk, network, events, _config())
        node.start()
        await _until_leader(node)
        term = node.core.term
        await node.stop()
        disk.flip_bit("superblock", 8 * 30)  # inside copy 0's header
        node = await _open(disk, network, events, _config())
        seen["term"] = (term, node.core.term)
        seen["fault"] = node.storage_fault
        await node.stop()

    _run(scenario)
    assert seen["fault"] is None
    term_before, term_after = seen["term"]
    assert term_after == term_before
    assert not events.named("node.storage_fault")
