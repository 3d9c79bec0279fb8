"""The real cluster transport: checksummed, length-prefixed frames over TCP (asyncio streams).

Theory of operation
-------------------
Every node listens on its cluster port and dials every peer once. A node *sends* only on the
connection it dialed, and *receives* only on connections peers dialed to it, so each pair of
nodes holds two TCP connections, each with one writer. This keeps each side simple: a dialer
owns a bounded queue and a reconnect loop; an acceptor only validates and delivers frames.

Frame (little-endian), `HEADER_SIZE_BYTES` = 24 bytes of header, then `length` payload bytes:

    magic u32 | version u16 | kind u8 | reserved u8 | sender u32 | length u32 | checksum u64

`checksum` is xxh3_64 over the first 16 header bytes followed by the payload, so a flipped bit
in the header or in the payload is caught. `kind` is HELLO, WELCOME, REFUSE, DATA or FRAGMENT.

Large messages: a payload above `max_message_size_bytes` (a snapshot) is sent as a run of
FRAGMENT frames, each within the frame limit, whose payload starts with a fragment header
(`FRAGMENT_HEADER_SIZE_BYTES` = 24 bytes, little-endian):

    message_id u64 | index u32 | count u32 | total_size u64

then a non-empty slice of the message. The receiver reassembles one message at a time per
connection and delivers it to the receiver as one payload, so the consensus core sees one
InstallSnapshot, as the spec has it. Reassembled messages are capped separately, at
`max_reassembled_size_bytes` (default 1 GiB): a bigger `total_size`, a fragment of another
message before the current one is complete, an index out of order, a count or size that does
not add up: each closes the connection with a logged reason and a counter, like a bad frame.
The sender interleaves: each turn of the write loop writes every queued small frame and then
one fragment, so a heartbeat waits behind at most one fragment (<= one frame limit of bytes),
not behind the whole snapshot. At most one large message waits per peer besides the one being
sent; a newer one replaces the waiting one (a newer snapshot supersedes an older one), which
bounds the sender's memory at two large messages per peer. A large message cut by a broken
connection is dropped (counted); Raft sends the snapshot again.

Handshake: the dialer sends HELLO (the node id it believes it dialed, u32, then its cluster
id as up to 64 bytes of UTF-8).
The acceptor answers WELCOME (its own cluster id and node id) or REFUSE (a UTF-8 reason) and
closes. Both sides check the other's cluster id and node id, so a node of another cluster, or a
peer table that points at the wrong node, is refused with a logged reason on both ends.

Failure handling: any bad frame on a connection (wrong magic or version, unknown kind, a length
above `max_message_size_bytes`, a checksum mismatch, a sender that differs from the handshake)
closes that one connection with a logged reason and a counter; the node keeps running. The
dialer then reconnects with exponential backoff and jitter drawn from the injected `Random`.

Send queues are bounded at `send_queue_max` frames per peer. When a queue is full the OLDEST
queued frame is dropped (and counted): consensus messages are superseded by newer ones
(a newer heartbeat or append carries everything an older one did), so the newest are the ones
worth delivering. Frames queued while a peer is unreachable stay queued (bounded) until the
connection comes back; frames written to a connection that then breaks are lost, which the
Transport contract allows (the transport is unreliable; Raft retransmits).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import Mapping
from typing import Any, Final, Protocol

import attrs
import xxhash

from mox.errors import MoxError
from mox.io.interfaces import NodeId, Random, Receiver

__all__ = [
    "CLUSTER_ID_MAX_BYTES",
    "DEFAULT_MAX_REASSEMBLED_SIZE_BYTES",
    "FRAGMENT_HEADER_SIZE_BYTES",
    "HEADER_SIZE_BYTES",
    "KIND_DATA",
    "KIND_FRAGMENT",
    "KIND_HELLO",
    "KIND_REFUSE",
    "KIND_WELCOME",
    "MAGIC",
    "VERSION",
    "EventLogger",
    "FrameError",
    "FrameHeader",
    "ListenError",
    "TcpTransport",
    "TransportStats",
    "decode_header",
    "encode_fragment",
    "encode_frame",
    "encode_hello",
]

MAGIC: Final = 0x46584F4D  # b"MOXF" read as a little-endian u32
VERSION: Final = 1
KIND_HELLO: Final = 1
KIND_WELCOME: Final = 2
KIND_REFUSE: Final = 3
KIND_DATA: Final = 4
KIND_FRAGMENT: Final = 5
_KINDS: Final = (KIND_HELLO, KIND_WELCOME, KIND_REFUSE, KIND_DATA, KIND_FRAGMENT)

_HEADER: Final = struct.Struct("<IHBBIIQ")
HEADER_SIZE_BYTES: Final = _HEADER.size
_PREFIX: Final = struct.Struct("<IHBBII")  # the header up to the checksum, which covers it
_CHECKED_PREFIX_BYTES: Final = _PREFIX.size
_HELLO: Final = struct.Struct("<IB")  # node id, cluster id length; then the cluster id (UTF-8)
_REFUSE_REASON_MAX_BYTES: Final = 512
_NODE_ID_MAX: Final = 2**32 - 1
_CLOSE_WAIT_S: Final = 1.0
_READ_CHUNK_BYTES: Final = 256 * 1024
CLUSTER_ID_MAX_BYTES: Final = 64
_FRAGMENT: Final = struct.Struct("<QIIQ")  # message id, index, count, total size
FRAGMENT_HEADER_SIZE_BYTES: Final = _FRAGMENT.size
DEFAULT_MAX_REASSEMBLED_SIZE_BYTES: Final = 1 << 30
# Large messages waiting per peer besides the one being sent (memory: each may be a snapshot).
_LARGE_QUEUE_MAX: Final = 1

assert HEADER_SIZE_BYTES == 24
assert _HELLO.size == 5
assert FRAGMENT_HEADER_SIZE_BYTES == 24


class EventLogger(Protocol):
    """The structured logger the transport writes to (a structlog bound logger fits)."""

    def info(self, event: str, /, **fields: Any) -> Any: ...

    def warning(self, event: str, /, **fields: Any) -> Any: ...

    def error(self, event: str, /, **fields: Any) -> Any: ...


class FrameError(Exception):
    """A frame failed validation; `reason` is a short machine-friendly tag for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class ListenError(MoxError):
    """The cluster port cannot be bound (in use, bad address, no permission)."""

    def __init__(self, host: str, port: int, problem: str) -> None:
        self.host = host
        self.port = port
        self.problem = problem
        super().__init__(f"cannot listen for cluster traffic on {host}:{port}: {problem}")


@attrs.frozen
class FrameHeader:
    kind: int
    sender: NodeId
    length_bytes: int
    checksum: int


def _checksum(prefix: bytes, payload: bytes | memoryview) -> int:
    hasher = xxhash.xxh3_64(prefix)
    hasher.update(payload)
    return hasher.intdigest()


def encode_frame(kind: int, sender: NodeId, payload: bytes | memoryview) -> bytes:
    """Header and payload of one frame, ready to write."""
    assert kind in _KINDS, kind
    assert 0 <= sender <= _NODE_ID_MAX, sender
    assert len(payload) < 2**32
    prefix = _PREFIX.pack(MAGIC, VERSION, kind, 0, sender, len(payload))
    frame = b"".join((prefix, _checksum(prefix, payload).to_bytes(8, "little"), payload))
    assert len(frame) == HEADER_SIZE_BYTES + len(payload)
    return frame


def decode_header(header: bytes, max_message_size_bytes: int) -> FrameHeader:
    """Validate the fixed part of a frame (everything but the checksum, which needs the payload).

    Raises FrameError naming what is wrong; the length is checked against the limit before any
    payload is read, so an oversized frame never makes the receiver allocate it.
    """
    assert len(header) == HEADER_SIZE_BYTES
    magic, version, kind, reserved, sender, length_bytes, checksum = _HEADER.unpack(header)
    if magic != MAGIC:
        raise FrameError("bad_magic", f"magic {magic:#010x}, expected {MAGIC:#010x}")
    if version != VERSION:
        raise FrameError("bad_version", f"version {version}, expected {VERSION}")
    if reserved != 0:
        raise FrameError("bad_header", f"reserved byte is {reserved}, expected 0")
    if kind not in _KINDS:
        raise FrameError("bad_kind", f"unknown frame kind {kind}")
    if length_bytes > max_message_size_bytes:
        raise FrameError(
            "oversize", f"frame of {length_bytes} bytes exceeds max {max_message_size_bytes}"
        )
    return FrameHeader(kind=kind, sender=sender, length_bytes=length_bytes, checksum=checksum)


def encode_hello(kind: int, sender: NodeId, cluster_id: str, node_id: NodeId) -> bytes:
    """A HELLO (dialer: `node_id` is the node it meant to reach) or WELCOME (acceptor: itself)."""
    assert kind in (KIND_HELLO, KIND_WELCOME)
    cluster = cluster_id.encode("utf-8")
    assert 1 <= len(cluster) <= CLUSTER_ID_MAX_BYTES, cluster_id
    return encode_frame(kind, sender, _HELLO.pack(node_id, len(cluster)) + cluster)


def encode_fragment(
    sender: NodeId, message_id: int, index: int, count: int, total_size_bytes: int, chunk: bytes
) -> bytes:
    """One FRAGMENT frame: the fragment header, then `chunk` (a non-empty slice of the message)."""
    assert 0 <= message_id < 2**64, message_id
    assert 2 <= count <= total_size_bytes, (count, total_size_bytes)
    assert 0 <= index < count, (index, count)
    assert 1 <= len(chunk) <= total_size_bytes, len(chunk)
    header = _FRAGMENT.pack(message_id, index, count, total_size_bytes)
    return encode_frame(KIND_FRAGMENT, sender, header + chunk)


class _Fragmenter:
    """Cuts one large payload into FRAGMENT frames, one frame at a time (no copy up front)."""

    def __init__(
        self, sender: NodeId, message_id: int, payload: bytes, chunk_size_bytes: int
    ) -> None:
        assert chunk_size_bytes >= 1
        assert len(payload) > chunk_size_bytes, "a payload that fits one frame is not fragmented"
        self.sender = sender
        self.message_id = message_id
        self.payload = memoryview(payload)
        self.chunk_size_bytes = chunk_size_bytes
        self.count = -(-len(payload) // chunk_size_bytes)
        self.index = 0
        assert self.count >= 2

    @property
    def done(self) -> bool:
        return self.index == self.count

    def next_frame(self) -> bytes:
        assert not self.done
        start = self.index * self.chunk_size_bytes
        chunk = self.payload[start : start + self.chunk_size_bytes]
        frame = encode_fragment(
            self.sender, self.message_id, self.index, self.count, len(self.payload), bytes(chunk)
        )
        self.index += 1
        return frame


class _Reassembly:
    """The one message being reassembled on a connection."""

    def __init__(self, message_id: int, count: int, total_size_bytes: int) -> None:
        self.message_id = message_id
        self.count = count
        self.total_size_bytes = total_size_bytes
        self.next_index = 0
        # Grown as fragments arrive, not allocated from `total_size`: a lying header must not
        # make the receiver allocate the cap.
        self.data = bytearray()


def _decode_hello(payload: bytes) -> tuple[str, NodeId]:
    if len(payload) < _HELLO.size:
        raise FrameError("bad_handshake", f"handshake payload of {len(payload)} bytes")
    node_id, cluster_size_bytes = _HELLO.unpack_from(payload)
    if len(payload) != _HELLO.size + cluster_size_bytes:
        raise FrameError("bad_handshake", f"handshake payload of {len(payload)} bytes")
    cluster = payload[_HELLO.size :].decode("utf-8", "replace")
    return cluster, node_id


async def _read_frame(
    reader: asyncio.StreamReader, max_message_size_bytes: int
) -> tuple[FrameHeader, bytes]:
    """One validated frame. Raises FrameError, or IncompleteReadError at end of stream."""
    raw_header = await reader.readexactly(HEADER_SIZE_BYTES)
    header = decode_header(raw_header, max_message_size_bytes)
    payload = await reader.readexactly(header.length_bytes)
    actual = _checksum(raw_header[:_CHECKED_PREFIX_BYTES], payload)
    if actual != header.checksum:
        raise FrameError(
            "bad_checksum", f"checksum {actual:#018x} != header {header.checksum:#018x}"
        )
    return header, payload


@attrs.define
class TransportStats:
    """Counters for metrics. Per-peer maps are keyed by node id; reasons by a short tag."""

    frames_sent: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    handshakes_refused: int = 0
    inbound_accepted: int = 0
    messages_fragmented: int = 0  # large messages whose every fragment was written
    fragments_sent: int = 0
    fragments_received: int = 0
    messages_reassembled: int = 0
    send_dropped_queue_full: dict[NodeId, int] = attrs.field(factory=dict)
    send_dropped_other: dict[str, int] = attrs.field(factory=dict)
    frames_rejected: dict[str, int] = attrs.field(factory=dict)

    def count_rejected(self, reason: str) -> None:
        self.frames_rejected[reason] = self.frames_rejected.get(reason, 0) + 1

    def count_dropped(self, reason: str) -> None:
        self.send_dropped_other[reason] = self.send_dropped_other.get(reason, 0) + 1


class _Peer:
    """The dialing side towards one peer: its bounded queue and its connection state."""

    def __init__(self, node_id: NodeId, address: tuple[str, int], queue_max: int) -> None:
        assert queue_max >= 1
        self.node_id = node_id
        self.address = address
        self.queue: deque[bytes] = deque()
        self.queue_max = queue_max
        self.large: deque[bytes] = deque()  # payloads above the frame limit, not yet started
        self.sending: _Fragmenter | None = None
        self.wakeup = asyncio.Event()
        self.connected = False
        # Set when this peer dialed us: it is up again, so a pending backoff is cut short.
        self.redial = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class TcpTransport:
    """`mox.io.interfaces.Transport` over TCP. See the module docstring for the wire format."""

    def __init__(
        self,
        node_id: NodeId,
        listen: tuple[str, int],
        peers: Mapping[NodeId, tuple[str, int]],
        max_message_size_bytes: int,
        send_queue_max: int,
        logger: EventLogger,
        *,
        cluster_id: str,
        random: Random,
        backoff_min_ms: int = 20,
        backoff_max_ms: int = 1000,
        connect_timeout_ms: int = 2000,
        handshake_timeout_ms: int = 2000,
        max_reassembled_size_bytes: int = DEFAULT_MAX_REASSEMBLED_SIZE_BYTES,
    ) -> None:
        assert 0 <= node_id <= _NODE_ID_MAX, node_id
        assert node_id not in peers, "a node is not its own peer"
        assert all(0 <= peer <= _NODE_ID_MAX for peer in peers)
        assert max_message_size_bytes >= _HELLO.size + CLUSTER_ID_MAX_BYTES
        assert send_queue_max >= 1
        assert max_reassembled_size_bytes >= max_message_size_bytes
        assert max_message_size_bytes > FRAGMENT_HEADER_SIZE_BYTES
        assert 1 <= len(cluster_id.encode("utf-8")) <= CLUSTER_ID_MAX_BYTES, cluster_id
        assert 0 < backoff_min_ms <= backoff_max_ms
        assert connect_timeout_ms > 0
        assert handshake_timeout_ms > 0
        self._node_id = node_id
        self._listen = listen
        self._max_message_size_bytes = max_message_size_bytes
        self._max_reassembled_size_bytes = max_reassembled_size_bytes
        self._next_message_id = 0
        self._logger = logger
        self._cluster_id = cluster_id
        self._random = random
        self._backoff_min_ms = backoff_min_ms
        self._backoff_max_ms = backoff_max_ms
        self._connect_timeout_s = connect_timeout_ms / 1000
        self._handshake_timeout_s = handshake_timeout_ms / 1000
        # Sorted by id so that start order (and so log order) does not depend on dict order.
        self._peers: dict[NodeId, _Peer] = {
            peer: _Peer(peer, peers[peer], send_queue_max) for peer in sorted(peers)
        }
        self._receiver: Receiver | None = None
        self._server: asyncio.Server | None = None
        self._inbound: dict[asyncio.StreamWriter, NodeId | None] = {}
        self._inbound_tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.stats = TransportStats()

    # -- Transport protocol ------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def listen_address(self) -> tuple[str, int]:
        """The bound address; after `start()` the real port when 0 was asked for."""
        if self._server is not None and self._server.sockets:
            host, port = self._server.sockets[0].getsockname()[:2]
            return str(host), int(port)
        return self._listen

    def set_receiver(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def send(self, dst: NodeId, payload: bytes) -> None:
        """Queue `payload` for `dst`; never blocks. Drops (counted) when it cannot be sent."""
        if self._closing:
            self.stats.count_dropped("closed")
            return
        peer = self._peers.get(dst)
        if peer is None:
            self.stats.count_dropped("unknown_peer")
            self._logger.error("transport.send_unknown_peer", dst=dst)
            return
        if len(payload) > self._max_message_size_bytes:
            self._send_large(peer, payload)
            return
        if len(peer.queue) >= peer.queue_max:
            peer.queue.popleft()  # drop the oldest: newer consensus messages supersede it
            self.stats.send_dropped_queue_full[dst] = (
                self.stats.send_dropped_queue_full.get(dst, 0) + 1
            )
        peer.queue.append(encode_frame(KIND_DATA, self._node_id, payload))
        assert len(peer.queue) <= peer.queue_max
        peer.wakeup.set()

    def _send_large(self, peer: _Peer, payload: bytes) -> None:
        if len(payload) > self._max_reassembled_size_bytes:
            # The peer would refuse the message and drop the connection: keep it off the wire.
            self.stats.count_dropped("oversize")
            self._logger.error(
                "transport.send_oversize",
                dst=peer.node_id,
                size_bytes=len(payload),
                max_reassembled_size_bytes=self._max_reassembled_size_bytes,
            )
            return
        if len(peer.large) >= _LARGE_QUEUE_MAX:
            peer.large.popleft()  # a newer snapshot supersedes the waiting one
            self.stats.count_dropped("large_superseded")
        peer.large.append(payload)
        assert len(peer.large) <= _LARGE_QUEUE_MAX
        peer.wakeup.set()

    async def close(self) -> None:
        """Stop dialing, close every connection and the listener. Queued frames are dropped."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[None]] = [
            peer.task for peer in self._peers.values() if peer.task is not None
        ]
        tasks.extend(self._inbound_tasks)
        for writer in list(self._inbound):
            writer.transport.abort()  # no graceful flush: nothing is written to inbound peers
        # Cancel until every task is done: Python 3.11's wait_for can swallow a cancellation
        # that races with the completion of what it waits for (a connect that just
        # succeeded), and the task would then run on into a new session.
        pending: set[asyncio.Task[None]] = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        if self._server is not None:
            await self._server.wait_closed()
        for peer in self._peers.values():
            peer.queue.clear()
            peer.large.clear()
            peer.sending = None
            peer.connected = False
        self._logger.info("transport.closed", node=self._node_id)

    # -- lifecycle and introspection -------------------------------------------------------------

    async def start(self) -> None:
        """Bind the cluster port and start dialing every peer. Raises ListenError."""
        assert self._server is None, "started twice"
        assert not self._closing
        host, port = self._listen
        try:
            self._server = await asyncio.start_server(
                self._on_inbound, host, port, reuse_address=True
            )
        except OSError as exc:
            raise ListenError(host, port, exc.strerror or str(exc)) from exc
        for peer in self._peers.values():
            peer.task = asyncio.create_task(
                self._dial_loop(peer), name=f"tcp-dial-{self._node_id}-{peer.node_id}"
            )
        self._logger.info(
            "transport.started",
            node=self._node_id,
            listen=f"{self.listen_address[0]}:{self.listen_address[1]}",
            peers=[f"{p.node_id}@{p.address[0]}:{p.address[1]}" for p in self._peers.values()],
        )

    def connected_peers(self) -> list[NodeId]:
        """Peers whose outbound connection is up (handshake done), in id order."""
        return [peer.node_id for peer in self._peers.values() if peer.connected]

    def queue_depth(self, dst: NodeId) -> int:
        return len(self._peers[dst].queue)

    def register_metrics(self, registry: Any) -> None:
        """Export the counters to a prometheus_client CollectorRegistry (read at scrape time)."""
        registry.register(_StatsCollector(self))

    # -- dialing side ----------------------------------------------------------------------

    def _backoff_s(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half the step fixed, half random."""
        assert attempt >= 1
        step_ms = min(self._backoff_max_ms, self._backoff_min_ms << min(attempt - 1, 20))
        delay_ms = step_ms / 2 + self._random.random() * step_ms / 2
        assert 0 < delay_ms <= self._backoff_max_ms
        return delay_ms / 1000

    async def _dial_loop(self, peer: _Peer) -> None:
        attempt = 0
        while not self._closing:
            try:
                reason = await self._dial_once(peer)
            except Exception as exc:
                # An error no except clause names (uvloop raises RuntimeError on a write to
                # a transport the peer reset) must not end the dial task: this node would
                # never send to the peer again. Logged, counted, and dialed again.
                self._logger.error("transport.dial_error", peer=peer.node_id, exc_info=exc)
                self.stats.count_dropped("dial_error")
                reason = f"error: {exc.__class__.__name__}"
            if self._closing:
                return
            attempt = 1 if reason == "session_ended" else attempt + 1
            peer.redial.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.redial.wait(), self._backoff_s(attempt))

    async def _dial_once(self, peer: _Peer) -> str:
        """Connect, handshake, then write queued frames until the connection fails."""
        host, port = peer.address
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self._connect_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            self.stats.connect_failures += 1
            return f"connect: {exc}"
        try:
            if self._closing:
                return "closing"
            problem = await self._handshake_dialer(peer, reader, writer)
            if problem is not None:
                self.stats.handshakes_refused += 1
                self._logger.error("transport.handshake_failed", peer=peer.node_id, reason=problem)
                return problem
            peer.connected = True
            self.stats.connects += 1
            self._logger.info("transport.connected", peer=peer.node_id, address=f"{host}:{port}")
            await self._write_loop(peer, reader, writer)
            return "session_ended"
        except (OSError, asyncio.IncompleteReadError, TimeoutError, FrameError) as exc:
            if peer.connected:
                self.stats.disconnects += 1
                self._logger.warning(
                    "transport.disconnected",
                    peer=peer.node_id,
                    reason=str(exc) or type(exc).__name__,
                )
            return "session_ended" if peer.connected else f"handshake: {exc}"
        finally:
            peer.connected = False
            if peer.sending is not None:
                # Its first fragments went down a connection that is gone; the receiver dropped
                # them with it. Raft sends the snapshot again.
                peer.sending = None
                self.stats.count_dropped("large_connection_lost")
            writer.close()
            with contextlib.suppress(Exception):
                # Bounded: a peer that stopped reading must not hold up a close.
                await asyncio.wait_for(writer.wait_closed(), _CLOSE_WAIT_S)

    async def _handshake_dialer(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str | None:
        """None when the peer welcomed us and is who we expect; else the reason."""
        writer.write(encode_hello(KIND_HELLO, self._node_id, self._cluster_id, peer.node_id))
        await writer.drain()
        header, payload = await asyncio.wait_for(
            _read_frame(reader, self._max_message_size_bytes), self._handshake_timeout_s
        )
        if header.kind == KIND_REFUSE:
            text = payload[:_REFUSE_REASON_MAX_BYTES].decode("utf-8", "replace")
            return f"refused by peer: {text}"
        if header.kind != KIND_WELCOME:
            return f"expected WELCOME, got frame kind {header.kind}"
        cluster_id, node_id = _decode_hello(payload)
        if cluster_id != self._cluster_id:
            return (
                f"peer is in cluster {cluster_id!r}, this node is in cluster {self._cluster_id!r}"
            )
        if node_id != peer.node_id or header.sender != peer.node_id:
            return f"expected node {peer.node_id} at {peer.address}, found node {node_id}"
        return None

    async def _write_loop(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Write the queue in batches; return (by exception) when the connection breaks."""
        # The acceptor never writes after WELCOME: a read completing means the peer closed.
        eof = asyncio.ensure_future(reader.read(1))
        # The end of the connection wakes the loop like a send does: one Event to wait on,
        # not a task and an asyncio.wait per idle turn (those were most of this loop's CPU
        # besides the write itself). A wake-up left over for a later connection is harmless.
        eof.add_done_callback(lambda _eof: peer.wakeup.set())
        try:
            while True:
                if not peer.queue and not peer.large and peer.sending is None:
                    peer.wakeup.clear()
                    if not eof.done():
                        await peer.wakeup.wait()
                    if eof.done():
                        raise ConnectionResetError("peer closed the connection")
                    continue
                if writer.is_closing():
                    # uvloop raises RuntimeError (not OSError) on a write to a transport the
                    # peer's RST already closed: end the session as a reset instead.
                    raise ConnectionResetError("connection closed by peer")
                if peer.queue:
                    frames = list(peer.queue)
                    peer.queue.clear()
                    writer.writelines(frames)
                    self.stats.frames_sent += len(frames)
                    self.stats.bytes_sent += sum(len(frame) for frame in frames)
                if peer.sending is None and peer.large:
                    peer.sending = _Fragmenter(
                        self._node_id,
                        self._next_message_id,
                        peer.large.popleft(),
                        self._max_message_size_bytes - FRAGMENT_HEADER_SIZE_BYTES,
                    )
                    self._next_message_id += 1
                if peer.sending is not None:
                    # One fragment per turn, after the small frames: a heartbeat queued while a
                    # snapshot streams waits for one fragment, not for the whole snapshot.
                    frame = peer.sending.next_frame()
                    writer.write(frame)
                    self.stats.frames_sent += 1
                    self.stats.fragments_sent += 1
                    self.stats.bytes_sent += len(frame)
                    if peer.sending.done:
                        peer.sending = None
                        self.stats.messages_fragmented += 1
                    await writer.drain()
                    # drain() returns at once while the kernel takes the bytes: yield, so that
                    # ticks, reads and new sends run between fragments of a large snapshot.
                    await asyncio.sleep(0)
                else:
                    await writer.drain()
        finally:
            eof.cancel()

    # -- accepting side ------------------------------------------------------------------------

    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        self._inbound_tasks.add(task)
        self._inbound[writer] = None
        peername = writer.get_extra_info("peername")
        remote = f"{peername[0]}:{peername[1]}" if peername else "?"
        self.stats.inbound_accepted += 1
        sender: NodeId | None = None
        try:
            sender = await self._handshake_acceptor(reader, writer, remote)
            if sender is None:
                return
            self._inbound[writer] = sender
            await self._read_loop(reader, sender, remote)
        except asyncio.IncompleteReadError:
            pass  # the peer closed (or died): its dialer reconnects
        except asyncio.CancelledError:
            # close() cancels this task. Returning normally (not re-raising) is deliberate:
            # Python 3.11's start_server callback calls task.exception() on a cancelled
            # client task and logs a spurious traceback for each one.
            pass
        except (OSError, TimeoutError) as exc:
            self._logger.warning(
                "transport.inbound_error",
                remote=remote,
                peer=sender,
                reason=str(exc) or type(exc).__name__,
            )
        except FrameError as exc:
            self.stats.count_rejected(exc.reason)
            self._logger.error(
                "transport.frame_rejected",
                remote=remote,
                peer=sender,
                reason=exc.reason,
                detail=exc.detail,
            )
        finally:
            self._inbound.pop(writer, None)
            self._inbound_tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                # Bounded: a peer that stopped reading must not hold up a close.
                await asyncio.wait_for(writer.wait_closed(), _CLOSE_WAIT_S)

    async def _handshake_acceptor(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str
    ) -> NodeId | None:
        header, payload = await asyncio.wait_for(
            _read_frame(reader, self._max_message_size_bytes), self._handshake_timeout_s
        )
        if header.kind != KIND_HELLO:
            raise FrameError("bad_handshake", f"expected HELLO, got frame kind {header.kind}")
        cluster_id, wanted = _decode_hello(payload)
        problem: str | None = None
        if cluster_id != self._cluster_id:
            problem = (
                f"peer is in cluster {cluster_id!r}, this node is in cluster {self._cluster_id!r}"
            )
        elif wanted != self._node_id:
            problem = f"peer dialed node {wanted}, this is node {self._node_id}"
        elif header.sender not in self._peers:
            problem = f"node {header.sender} is not a configured peer of node {self._node_id}"
        if problem is not None:
            self.stats.handshakes_refused += 1
            self._logger.error(
                "transport.handshake_refused", remote=remote, peer=header.sender, reason=problem
            )
            reason = problem.encode()[:_REFUSE_REASON_MAX_BYTES]
            writer.write(encode_frame(KIND_REFUSE, self._node_id, reason))
            with contextlib.suppress(OSError):
                await writer.drain()
            return None
        # A new session from the same peer replaces an older one that may be half-open.
        for other, other_sender in list(self._inbound.items()):
            if other is not writer and other_sender == header.sender:
                other.close()
        writer.write(encode_hello(KIND_WELCOME, self._node_id, self._cluster_id, self._node_id))
        await writer.drain()
        self._logger.info("transport.accepted", remote=remote, peer=header.sender)
        dialer = self._peers.get(header.sender)
        if dialer is not None and not dialer.connected:
            dialer.redial.set()
        return header.sender

    async def _read_loop(self, reader: asyncio.StreamReader, sender: NodeId, remote: str) -> None:
        """Deliver DATA frames until the connection ends (IncompleteReadError) or one is bad.

        Frames are parsed out of whatever bytes have arrived, many per read: two awaits per
        frame (header, then payload) would cost more than the parsing itself. A header is
        validated (size limit included) as soon as its 24 bytes are in, before its payload.
        """
        buffer = bytearray()
        reassembly: list[_Reassembly | None] = [None]  # the message in progress, if any
        while True:
            chunk = await reader.read(_READ_CHUNK_BYTES)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buffer), None)
            buffer += chunk
            offset = 0
            while len(buffer) - offset >= HEADER_SIZE_BYTES:
                raw_header = bytes(buffer[offset : offset + HEADER_SIZE_BYTES])
                header = decode_header(raw_header, self._max_message_size_bytes)
                end = offset + HEADER_SIZE_BYTES + header.length_bytes
                if len(buffer) < end:
                    break  # the payload is still on its way
                payload = bytes(buffer[offset + HEADER_SIZE_BYTES : end])
                offset = end
                self._deliver(sender, raw_header, header, payload, reassembly)
            del buffer[:offset]
            assert len(buffer) < HEADER_SIZE_BYTES + self._max_message_size_bytes

    def _deliver(
        self,
        sender: NodeId,
        raw_header: bytes,
        header: FrameHeader,
        payload: bytes,
        reassembly: list[_Reassembly | None],
    ) -> None:
        actual = _checksum(raw_header[:_CHECKED_PREFIX_BYTES], payload)
        if actual != header.checksum:
            raise FrameError(
                "bad_checksum", f"checksum {actual:#018x} != header {header.checksum:#018x}"
            )
        if header.kind not in (KIND_DATA, KIND_FRAGMENT):
            raise FrameError("bad_kind", f"frame kind {header.kind} after the handshake")
        if header.sender != sender:
            raise FrameError(
                "bad_sender", f"frame from node {header.sender} on node {sender}'s connection"
            )
        self.stats.frames_received += 1
        self.stats.bytes_received += HEADER_SIZE_BYTES + len(payload)
        if header.kind == KIND_FRAGMENT:
            message = self._reassemble(payload, reassembly)
            if message is None:
                return
            payload = message
        if self._receiver is None:
            self.stats.count_rejected("no_receiver")
            return
        self._receiver(sender, payload)

    def _reassemble(self, payload: bytes, reassembly: list[_Reassembly | None]) -> bytes | None:
        """Add one fragment; the whole message once its last fragment is in, else None."""
        if len(payload) <= FRAGMENT_HEADER_SIZE_BYTES:
            raise FrameError("bad_fragment", f"fragment frame of {len(payload)} bytes")
        message_id, index, count, total_size_bytes = _FRAGMENT.unpack_from(payload)
        chunk_size_bytes = len(payload) - FRAGMENT_HEADER_SIZE_BYTES
        if total_size_bytes > self._max_reassembled_size_bytes:
            raise FrameError(
                "reassembly_oversize",
                f"message {message_id} of {total_size_bytes} bytes exceeds max reassembled size "
                f"{self._max_reassembled_size_bytes}",
            )
        if not 2 <= count <= total_size_bytes:
            raise FrameError(
                "bad_fragment",
                f"message {message_id}: {count} fragments for {total_size_bytes} bytes",
            )
        current = reassembly[0]
        if current is None:
            if index != 0:
                raise FrameError(
                    "fragment_order", f"message {message_id} starts at fragment {index}, not 0"
                )
            current = _Reassembly(message_id, count, total_size_bytes)
            reassembly[0] = current
        elif (message_id, count, total_size_bytes) != (
            current.message_id,
            current.count,
            current.total_size_bytes,
        ):
            raise FrameError(
                "fragment_order",
                f"fragment of message {message_id} ({count} fragments, {total_size_bytes} bytes) "
                f"while message {current.message_id} ({current.count} fragments, "
                f"{current.total_size_bytes} bytes) is incomplete",
            )
        elif index != current.next_index:
            raise FrameError(
                "fragment_order",
                f"message {message_id}: fragment {index}, expected {current.next_index}",
            )
        if len(current.data) + chunk_size_bytes > current.total_size_bytes:
            raise FrameError(
                "bad_fragment",
                f"message {message_id}: fragment {index} runs past its total size "
                f"{current.total_size_bytes}",
            )
        current.data += memoryview(payload)[FRAGMENT_HEADER_SIZE_BYTES:]
        current.next_index += 1
        self.stats.fragments_received += 1
        assert len(current.data) <= current.total_size_bytes
        if current.next_index < current.count:
            return None
        reassembly[0] = None
        if len(current.data) != current.total_size_bytes:
            raise FrameError(
                "bad_fragment",
                f"message {message_id}: {len(current.data)} bytes in {count} fragments, "
                f"header says {current.total_size_bytes}",
            )
        self.stats.messages_reassembled += 1
        return bytes(current.data)


class _StatsCollector:
    """A prometheus_client custom collector reading `TransportStats` at scrape time."""

    def __init__(self, transport: TcpTransport) -> None:
        self._transport = transport

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self._transport.stats
        simple = [
            ("mox_transport_frames_sent", "Frames written to peers", stats.frames_sent),
            ("mox_transport_bytes_sent", "Bytes written to peers", stats.bytes_sent),
            ("mox_transport_frames_received", "Frames delivered from peers", stats.frames_received),
            ("mox_transport_bytes_received", "Bytes received from peers", stats.bytes_received),
            ("mox_transport_connects", "Outbound sessions established", stats.connects),
            ("mox_transport_connect_failures", "Failed outbound connects", stats.connect_failures),
            ("mox_transport_disconnects", "Outbound sessions lost", stats.disconnects),
            ("mox_transport_handshakes_refused", "Handshakes refused", stats.handshakes_refused),
            (
                "mox_transport_messages_fragmented",
                "Large messages sent as fragments",
                stats.messages_fragmented,
            ),
            ("mox_transport_fragments_sent", "Fragment frames written", stats.fragments_sent),
            (
                "mox_transport_fragments_received",
                "Fragment frames received",
                stats.fragments_received,
            ),
            (
                "mox_transport_messages_reassembled",
                "Large messages reassembled from fragments",
                stats.messages_reassembled,
            ),
        ]
        for name, doc, value in simple:
            yield CounterMetricFamily(name, doc, value=value)
        dropped = CounterMetricFamily(
            "mox_transport_send_dropped", "Frames dropped before sending", labels=["peer", "reason"]
        )
        for peer_id, count in sorted(stats.send_dropped_queue_full.items()):
            dropped.add_metric([str(peer_id), "queue_full"], count)
        for reason, count in sorted(stats.send_dropped_other.items()):
            dropped.add_metric(["", reason], count)
        yield dropped
        rejected = CounterMetricFamily(
            "mox_transport_frames_rejected", "Inbound frames rejected", labels=["reason"]
        )
        for reason, count in sorted(stats.frames_rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        connected = GaugeMetricFamily(
            "mox_transport_peer_connected", "1 when the outbound session is up", labels=["peer"]
        )
        queued = GaugeMetricFamily(
            "mox_transport_send_queue_depth", "Frames queued per peer", labels=["peer"]
        )
        for peer in self._transport._peers.values():
            connected.add_metric([str(peer.node_id)], 1.0 if peer.connected else 0.0)
            queued.add_metric([str(peer.node_id)], float(len(peer.queue)))
        yield connected
        yield queued
