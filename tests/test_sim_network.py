"""The simulated network: delays, loss, duplication, reordering, partitions, determinism."""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
from typing import Any

import pytest

from mox.io.simloop import run_virtual
from mox.sim.network import NetworkFaults, SimNetwork


def _run(
    seed: int,
    faults: NetworkFaults,
    count: int = 200,
    setup: Any = None,
) -> tuple[list[tuple[float, int, int, bytes]], SimNetwork, list[dict[str, Any]]]:
    """Node 1 sends `count` numbered payloads to node 2; returns what 2 received, when."""
    trace: list[dict[str, Any]] = []
    network = SimNetwork(random.Random(seed), faults, trace=trace.append)
    received: list[tuple[float, int, int, bytes]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a = network.endpoint(1)
        b = network.endpoint(2)
        b.set_receiver(lambda src, payload: received.append((loop.time(), src, 2, payload)))
        a.set_receiver(lambda src, payload: received.append((loop.time(), src, 1, payload)))
        if setup is not None:
            setup(network)
        for n in range(count):
            a.send(2, n.to_bytes(4, "big"))
            await asyncio.sleep(0.001)
        await asyncio.sleep(1.0)

    run_virtual(main())
    return received, network, trace


def test_healthy_network_delivers_everything_within_latency_bounds() -> None:
    faults = NetworkFaults(latency_min_ms=1.0, latency_mean_ms=3.0, latency_max_ms=10.0)
    received, network, trace = _run(1, faults)
    assert len(received) == 200
    assert sorted(int.from_bytes(p, "big") for *_, p in received) == list(range(200))
    for t, _src, _dst, payload in received:
        sent_at = int.from_bytes(payload, "big") * 0.001
        assert 0.001 - 1e-9 <= t - sent_at <= 0.010 + 1e-9
    assert network.stats.delivered == 200
    assert network.stats.dropped == 0
    assert trace == []


def test_loss_drops_about_the_configured_fraction_and_traces_each_drop() -> None:
    received, network, trace = _run(2, NetworkFaults(loss_probability=0.3), count=1000)
    assert 600 < len(received) < 800
    assert network.stats.dropped_loss == 1000 - len(received)
    drops = [e for e in trace if e["action"] == "DropMessage"]
    assert len(drops) == network.stats.dropped_loss
    assert drops[0]["msg"] == {"src": 1, "dst": 2, "size_bytes": 4}


def test_duplication_delivers_some_payloads_twice() -> None:
    received, network, trace = _run(3, NetworkFaults(duplicate_probability=0.2), count=500)
    payloads = [p for *_, p in received]
    assert len(payloads) == 500 + network.stats.duplicated
    assert 50 < network.stats.duplicated < 150
    assert len(set(payloads)) == 500
    assert sum(1 for e in trace if e["action"] == "DuplicateMessage") == network.stats.duplicated


def test_reordering_changes_arrival_order() -> None:
    in_order, _, _ = _run(4, NetworkFaults(latency_min_ms=1, latency_mean_ms=0, latency_max_ms=1))
    assert [int.from_bytes(p, "big") for *_, p in in_order] == list(range(200))
    reordered, _, _ = _run(4, NetworkFaults(reorder_probability=0.5, reorder_delay_max_ms=30))
    order = [int.from_bytes(p, "big") for *_, p in reordered]
    assert sorted(order) == list(range(200))
    inversions = sum(1 for x, y in itertools.pairwise(order) if x > y)
    assert inversions > 10


def test_symmetric_partition_and_heal() -> None:
    trace: list[dict[str, Any]] = []
    network = SimNetwork(random.Random(5), NetworkFaults(), trace=trace.append)
    got: dict[int, list[int]] = {1: [], 2: [], 3: []}

    async def main() -> None:
        eps = {n: network.endpoint(n) for n in (1, 2, 3)}
        for n, ep in eps.items():
            ep.set_receiver(functools.partial(_append_src, got[n]))
        network.partition([[1, 2], [3]])
        for src in (1, 2, 3):
            for dst in (1, 2, 3):
                if src != dst:
                    eps[src].send(dst, b"x")
        await asyncio.sleep(0.1)
        assert got == {1: [2], 2: [1], 3: []}
        network.heal()
        eps[1].send(3, b"y")
        eps[3].send(1, b"y")
        await asyncio.sleep(0.1)

    run_virtual(main())
    assert got == {1: [2, 3], 2: [1], 3: [1]}
    assert network.stats.dropped_partition == 4
    assert [e["args"]["reason"] for e in trace] == ["partition"] * 4


def test_asymmetric_block_cuts_one_direction_only() -> None:
    network = SimNetwork(random.Random(6))
    got: list[tuple[int, int]] = []

    async def main() -> None:
        eps = {n: network.endpoint(n) for n in (1, 2)}
        for n, ep in eps.items():
            ep.set_receiver(functools.partial(_append_pair, got, n))
        network.block(1, 2)
        eps[1].send(2, b"a")
        eps[2].send(1, b"b")
        await asyncio.sleep(0.1)

    run_virtual(main())
    assert got == [(2, 1)]


def test_partition_starting_while_packet_in_flight_drops_it() -> None:
    network = SimNetwork(random.Random(7), NetworkFaults(latency_min_ms=10, latency_max_ms=10))
    got: list[int] = []

    async def main() -> None:
        a, b = network.endpoint(1), network.endpoint(2)
        b.set_receiver(lambda src, payload: got.append(src))
        a.send(2, b"a")
        await asyncio.sleep(0.005)
        network.isolate(2, [1, 2])
        await asyncio.sleep(0.02)

    run_virtual(main())
    assert got == []
    assert network.stats.dropped_partition == 1


def test_closed_endpoint_receives_nothing_and_new_endpoint_does() -> None:
    network = SimNetwork(random.Random(8))
    got: list[str] = []

    async def main() -> None:
        a, b = network.endpoint(1), network.endpoint(2)
        b.set_receiver(lambda src, payload: got.append("old"))
        await b.close()
        a.send(2, b"a")
        await asyncio.sleep(0.1)
        b2 = network.endpoint(2)
        b2.set_receiver(lambda src, payload: got.append("new"))
        a.send(2, b"a")
        b.send(1, b"from a dead endpoint")
        await asyncio.sleep(0.1)

    run_virtual(main())
    assert got == ["new"]
    assert network.stats.dropped_down == 1
    assert network.stats.sent == 2


def test_same_seed_same_deliveries_and_different_seed_differs() -> None:
    faults = NetworkFaults(loss_probability=0.1, duplicate_probability=0.1, reorder_probability=0.3)
    first, _, t1 = _run(42, faults)
    second, _, t2 = _run(42, faults)
    other, _, _ = _run(43, faults)
    assert first == second
    assert t1 == t2
    assert first != other


def test_overflow_bound_drops_beyond_in_flight_max() -> None:
    network = SimNetwork(
        random.Random(9), NetworkFaults(latency_min_ms=5, latency_max_ms=5, in_flight_per_link_max=3)
    )
    got: list[bytes] = []

    async def main() -> None:
        a, b = network.endpoint(1), network.endpoint(2)
        b.set_receiver(lambda src, payload: got.append(payload))
        for n in range(5):
            a.send(2, bytes([n]))
        await asyncio.sleep(0.1)

    run_virtual(main())
    assert sorted(got) == [b"\x00", b"\x01", b"\x02"]
    assert network.stats.dropped_overflow == 2


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"loss_probability": 1.5}, "loss_probability"),
        ({"duplicate_probability": -0.1}, "duplicate_probability"),
        ({"latency_min_ms": -1.0}, "latency_min_ms"),
        ({"latency_min_ms": 10.0, "latency_max_ms": 5.0}, "latency_max_ms"),
    ],
)
def test_bad_fault_options_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NetworkFaults(**kwargs)


def test_named_cuts_heal_independently() -> None:
    network = SimNetwork(random.Random(10))
    got: list[tuple[int, int]] = []

    async def main() -> None:
        eps = {n: network.endpoint(n) for n in (1, 2, 3)}
        for n, ep in eps.items():
            ep.set_receiver(functools.partial(_append_pair, got, n))
        network.partition([[1], [2, 3]])  # name "partition"
        network.block(2, 3, name="asymmetric")
        assert network.is_blocked(1, 2) and network.is_blocked(2, 3)
        network.clear_cut("partition")
        assert not network.is_blocked(1, 2)
        assert network.is_blocked(2, 3) and not network.is_blocked(3, 2)
        eps[1].send(2, b"a")
        eps[2].send(3, b"b")
        eps[3].send(2, b"c")
        await asyncio.sleep(0.1)
        network.heal()
        assert not network.partitioned

    run_virtual(main())
    assert sorted(got) == [(1, 2), (3, 2)]


def _append_src(out: list[int], src: int, payload: bytes) -> None:
    out.append(src)


def _append_pair(out: list[tuple[int, int]], dst: int, src: int, payload: bytes) -> None:
    out.append((src, dst))
