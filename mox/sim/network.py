"""The simulated network: per-node `Transport` endpoints over one lossy, reordering bag.

Theory of operation. `SimNetwork.endpoint(node_id)` hands a node its `Transport`. A `send`
draws, from the run's one `Random`, whether the packet is lost, whether it is duplicated
and how long each copy takes, and schedules each delivery with `loop.call_at` on the
running `VirtualTimeLoop`. A delivery checks the link again (a partition that started
while the packet was in flight swallows it) and whether the destination endpoint is open
(a crashed node receives nothing), then calls the destination's receiver synchronously.

Partitions are a set of blocked directed links: `partition([[1, 2], [3]])` is symmetric,
`block(src, dst)` one-way, `isolate(node)` cuts a node off both ways, `heal()` clears all.
Flapping is the world's business: it calls these on a schedule.

Every packet the spec would see as lost or duplicated is reported to the trace as
`DropMessage` / `DuplicateMessage`, with the message decoded by the `describe` function the
world hands in (the core's codec), so the line names the message exactly as the core does.

Nothing here reads a clock or the `random` module: time is the loop's, randomness the rng's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from mox.io.interfaces import NodeId, Random, Receiver

__all__ = ["NetworkFaults", "NetworkStats", "SimEndpoint", "SimNetwork"]

# A decoded message as a trace `msg` object, or None if the payload is no message of the
# spec (the read-index messages, or bytes that do not decode): then no event is traced.
Describe = Callable[[bytes], "dict[str, Any] | None"]
# Receives one trace event (without `i`/`t_ns`: the node's trace wrapper adds those).
TraceEmit = Callable[["dict[str, Any]"], None]


def _check_probability(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value}")


def _check_non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


@attrs.frozen
class NetworkFaults:
    """The network's fault options. The defaults are a healthy LAN: small delays, no loss.

    A copy's one-way delay is `latency_min_ms` plus an exponential tail of mean
    `latency_mean_ms`, capped at `latency_max_ms`; with `reorder_probability` a copy is held
    back a further uniform `[0, reorder_delay_max_ms)` so that it overtakes nothing but is
    overtaken (independent delays already reorder; this makes it common and large).
    """

    latency_min_ms: float = attrs.field(default=0.5, validator=_check_non_negative)
    latency_mean_ms: float = attrs.field(default=2.0, validator=_check_non_negative)
    latency_max_ms: float = attrs.field(default=50.0, validator=_check_non_negative)
    loss_probability: float = attrs.field(default=0.0, validator=_check_probability)
    duplicate_probability: float = attrs.field(default=0.0, validator=_check_probability)
    reorder_probability: float = attrs.field(default=0.0, validator=_check_probability)
    reorder_delay_max_ms: float = attrs.field(default=20.0, validator=_check_non_negative)
    # A bound on packets in flight per directed link: beyond it the network drops (a full
    # socket buffer), so a partition that heals cannot release an unbounded burst.
    in_flight_per_link_max: int = 4096

    def __attrs_post_init__(self) -> None:
        if self.latency_max_ms < self.latency_min_ms:
            raise ValueError(
                f"latency_max_ms ({self.latency_max_ms}) < latency_min_ms ({self.latency_min_ms})"
            )
        if self.in_flight_per_link_max < 1:
            raise ValueError(f"in_flight_per_link_max must be >= 1, got {self.in_flight_per_link_max}")


@attrs.define
class NetworkStats:
    """Counters of what the network did to packets (copies, not messages, after `sent`)."""

    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_down: int = 0
    dropped_overflow: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_loss + self.dropped_partition + self.dropped_down + self.dropped_overflow


@attrs.define(eq=False)
class _Packet:
    src: NodeId
    dst: NodeId
    payload: bytes


class SimEndpoint:
    """One node's `Transport` on a `SimNetwork`. Closed by a crash; a restart gets a new one."""

    def __init__(self, network: SimNetwork, node_id: NodeId) -> None:
        self._network = network
        self._node_id = node_id
        self._receiver: Receiver | None = None
        self.closed = False

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def send(self, dst: NodeId, payload: bytes) -> None:
        if self.closed:
            return
        self._network.send(self._node_id, dst, payload)

    def set_receiver(self, receiver: Receiver) -> None:
        self._receiver = receiver

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        """Close at once (a crash does not wait for anything)."""
        self.closed = True
        self._receiver = None

    def _deliver(self, src: NodeId, payload: bytes) -> bool:
        if self.closed or self._receiver is None:
            return False
        self._receiver(src, payload)
        return True


class SimNetwork:
    """All links between the nodes of one simulated cluster."""

    def __init__(
        self,
        rng: Random,
        faults: NetworkFaults | None = None,
        *,
        describe: Describe | None = None,
        trace: TraceEmit | None = None,
    ) -> None:
        self._rng = rng
        self.faults = faults if faults is not None else NetworkFaults()
        self._describe = describe
        self._trace = trace
        self._endpoints: dict[NodeId, SimEndpoint] = {}
        # Named sets of cut directed links (one per fault source, so that one fault healing
        # does not heal another's cut); `_blocked` is their union.
        self._cuts: dict[str, frozenset[tuple[NodeId, NodeId]]] = {}
        self._blocked: frozenset[tuple[NodeId, NodeId]] = frozenset()
        self._in_flight: dict[tuple[NodeId, NodeId], int] = {}
        self.stats = NetworkStats()

    # -- endpoints ---------------------------------------------------------------------

    def endpoint(self, node_id: NodeId) -> SimEndpoint:
        """A fresh endpoint for `node_id`, replacing (and closing) any earlier one."""
        old = self._endpoints.get(node_id)
        if old is not None:
            old.close_now()
        endpoint = SimEndpoint(self, node_id)
        self._endpoints[node_id] = endpoint
        return endpoint

    def set_trace(self, trace: TraceEmit | None, describe: Describe | None) -> None:
        self._trace = trace
        self._describe = describe

    # -- partitions --------------------------------------------------------------------

    def set_cut(self, name: str, links: Iterable[tuple[NodeId, NodeId]]) -> None:
        """Cut the directed links `links` under `name`, replacing that name's earlier cut."""
        cut = frozenset(links)
        for src, dst in cut:
            assert src != dst
        if cut:
            self._cuts[name] = cut
        else:
            self._cuts.pop(name, None)
        self._blocked = frozenset().union(*self._cuts.values())

    def clear_cut(self, name: str) -> None:
        self.set_cut(name, ())

    def partition(self, groups: Sequence[Iterable[NodeId]], *, name: str = "partition") -> None:
        """Symmetric partition: nodes talk only within their group."""
        group_of: dict[NodeId, int] = {}
        for group_index, group in enumerate(groups):
            for node in group:
                assert node not in group_of, f"node {node} is in two groups"
                group_of[node] = group_index
        nodes = sorted(group_of)
        self.set_cut(
            name, [(a, b) for a in nodes for b in nodes if a != b and group_of[a] != group_of[b]]
        )

    def block(self, src: NodeId, dst: NodeId, *, name: str = "block") -> None:
        """One-way cut: packets from src to dst are lost; dst to src still flows."""
        assert src != dst
        self.set_cut(name, self._cuts.get(name, frozenset()) | {(src, dst)})

    def isolate(self, node: NodeId, nodes: Iterable[NodeId], *, name: str = "isolate") -> None:
        """Cut `node` off from every other node of `nodes`, both ways."""
        links = set(self._cuts.get(name, frozenset()))
        for other in nodes:
            if other != node:
                links.add((node, other))
                links.add((other, node))
        self.set_cut(name, links)

    def heal(self) -> None:
        """Every link works again (packets already lost stay lost)."""
        self._cuts.clear()
        self._blocked = frozenset()

    def is_blocked(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) in self._blocked

    @property
    def partitioned(self) -> bool:
        return bool(self._blocked)

    # -- sending -----------------------------------------------------------------------

    def send(self, src: NodeId, dst: NodeId, payload: bytes) -> None:
        assert src != dst, "a node does not send to itself over the network"
        self.stats.sent += 1
        faults = self.faults
        # Draw every decision for this packet up front, in a fixed order, whatever the
        # outcome: the number of draws per send does not depend on the link state, so a
        # partition elsewhere does not shift every later random number of the run.
        lost = self._rng.random() < faults.loss_probability
        duplicated = self._rng.random() < faults.duplicate_probability
        delay_s = self._draw_delay_s()
        duplicate_delay_s = self._draw_delay_s()
        packet = _Packet(src, dst, payload)
        if lost:
            self.stats.dropped_loss += 1
            self._emit_drop(packet, "loss")
            return
        if (src, dst) in self._blocked:
            self.stats.dropped_partition += 1
            self._emit_drop(packet, "partition")
            return
        self._schedule(packet, delay_s)
        if duplicated:
            self.stats.duplicated += 1
            self._emit("DuplicateMessage", packet, None)
            self._schedule(packet, duplicate_delay_s)

    def _draw_delay_s(self) -> float:
        faults = self.faults
        u = self._rng.random()
        tail_ms = -math.log(1.0 - u) * faults.latency_mean_ms
        delay_ms = min(faults.latency_min_ms + tail_ms, faults.latency_max_ms)
        if self._rng.random() < faults.reorder_probability:
            delay_ms += self._rng.random() * faults.reorder_delay_max_ms
        assert delay_ms >= 0.0
        return delay_ms / 1000.0

    def _schedule(self, packet: _Packet, delay_s: float) -> None:
        link = (packet.src, packet.dst)
        in_flight = self._in_flight.get(link, 0)
        if in_flight >= self.faults.in_flight_per_link_max:
            self.stats.dropped_overflow += 1
            self._emit_drop(packet, "overflow")
            return
        self._in_flight[link] = in_flight + 1
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + delay_s, self._deliver, packet)

    def _deliver(self, packet: _Packet) -> None:
        link = (packet.src, packet.dst)
        self._in_flight[link] -= 1
        assert self._in_flight[link] >= 0
        if link in self._blocked:
            self.stats.dropped_partition += 1
            self._emit_drop(packet, "partition")
            return
        endpoint = self._endpoints.get(packet.dst)
        if endpoint is None or not endpoint._deliver(packet.src, packet.payload):
            self.stats.dropped_down += 1
            self._emit_drop(packet, "down")
            return
        self.stats.delivered += 1

    # -- trace -------------------------------------------------------------------------

    def _emit_drop(self, packet: _Packet, reason: str) -> None:
        self._emit("DropMessage", packet, reason)

    def _emit(self, action: str, packet: _Packet, reason: str | None) -> None:
        if self._trace is None:
            return
        if self._describe is not None:
            msg = self._describe(packet.payload)
            if msg is None:
                return  # the spec has no such message: it cannot lose or duplicate it
        else:
            msg = {"src": packet.src, "dst": packet.dst, "size_bytes": len(packet.payload)}
        event: dict[str, Any] = {"node": packet.dst, "action": action, "msg": msg}
        if reason is not None:
            event["args"] = {"reason": reason}
        self._trace(event)
