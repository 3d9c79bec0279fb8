"""An in-memory cluster of RaftCores for scenario tests and property tests (etcd's rafttest).

No IO: each node has a `MemStorage` that keeps exactly what a Ready asked to persist (so a
restart rebuilds the core from durable state only), a list state machine, and one shared
queue of in-flight messages that the test delivers, drops, duplicates or reorders. Every
message goes through `encode_message`/`decode_message`, as on the wire.

`InteractionEnv.handle(command)` runs one line of a scenario file (tests/testdata/raft/*.txt)
and returns its output: the trace events the command caused, one line each, plus the Ready
processing and applied entries.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import msgspec

from mox.consensus.raft.core import ConfChange, RaftConfig, RaftCore, Ready, RestoredState
from mox.consensus.raft.messages import (
    CONFIG,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    PreVote,
    PreVoteResponse,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    decode_message,
    encode_message,
)
from mox.consensus.raft.trace import ListTraceSink, is_traced, message_to_trace

__all__ = ["InteractionEnv", "MemStorage", "ScenarioError", "SimNode", "format_message"]



class _Chance(Protocol):
    """What the harness needs of a random source (a seeded `random.Random` in tests; the core
    package itself imports no randomness)."""

    def randrange(self, start: int, stop: int) -> int: ...

    def random(self) -> float: ...

class ScenarioError(ValueError):
    """A scenario command is malformed. Names the command and the problem."""


class MemStorage:
    """The durable state of one node: what Readys asked to persist, nothing more."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.snapshot_data = b""
        self.entries: list[Entry] = []

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            if rd.snapshot.keep_log_suffix:
                self.entries = [e for e in self.entries if e.index > meta.index]
            else:
                self.entries = []
            self.snapshot = meta
            self.snapshot_data = rd.snapshot.data
        if rd.entries:
            first = rd.entries[0].index
            base = self.snapshot.index if self.snapshot else 0
            assert first <= base + len(self.entries) + 1, "a gap in the persisted log"
            del self.entries[first - base - 1 :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, meta: SnapshotMeta, data: bytes) -> None:
        self.entries = [e for e in self.entries if e.index > meta.index]
        self.snapshot = meta
        self.snapshot_data = data

    def restored(self) -> RestoredState:
        return RestoredState(
            hard_state=self.hard_state,
            snapshot=self.snapshot,
            snapshot_data=self.snapshot_data,
            entries=list(self.entries),
            applied_index=self.snapshot.index if self.snapshot else 0,
        )

    def last_index(self) -> int:
        return (self.snapshot.index if self.snapshot else 0) + len(self.entries)


# The harness's state machine: the applied entries as (index, term, kind, commands).
Applied = tuple[int, int, str, tuple[bytes, ...]]
_applied_codec = msgspec.msgpack.Encoder()
_applied_decoder = msgspec.msgpack.Decoder(list[tuple[int, int, str, tuple[bytes, ...]]])


class SimNode:
    """One node: config, core, storage and state machine (rebuilt from the snapshot on restart)."""

    def __init__(
        self, config: RaftConfig, timeouts: Callable[[int], Iterator[int]], sink: ListTraceSink | None
    ) -> None:
        self.config = config
        self.timeouts = timeouts
        self.sink = sink
        self.storage = MemStorage()
        self.applied: list[Applied] = []
        self.read_results: list[tuple[bytes, int | None]] = []
        self.core = RaftCore(config, self.storage.restored(), timeouts(config.node_id), sink)

    def restart(self) -> None:
        """Crash and recover: everything not persisted is lost."""
        self.applied = _applied_decoder.decode(self.storage.snapshot_data) if self.storage.snapshot else []
        self.read_results = []
        self.core = RaftCore(
            self.config, self.storage.restored(), self.timeouts(self.config.node_id), self.sink
        )

    def compact(self, index: int) -> bool:
        """Snapshots the state machine at `index` and compacts core and storage to it."""
        data = _applied_codec.encode([a for a in self.applied if a[0] <= index])
        if not self.core.compact(index, data):
            return False
        self.storage.compact(self.core.snapshot_meta, data)
        return True


class _EnvSink(ListTraceSink):
    """Keeps events for checks and, in the env's output, in order with the harness lines."""

    def __init__(self, env: InteractionEnv) -> None:
        super().__init__()
        self.env = env

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)
        if self.env.history is not None:
            self.env.history.append(event)
        if self.env.recording:
            self.env.out.append(format_event(event, self.env.initial_members))


def _fixed_timeouts(node_id: int) -> Iterator[int]:
    return itertools.repeat(10 + node_id - 1)


class InteractionEnv:
    """A cluster on one shared message queue, driven command by command."""

    def __init__(
        self,
        timeouts: Callable[[int], Iterator[int]] = _fixed_timeouts,
        trace: bool = True,
        keep_history: bool = False,
    ) -> None:
        self.nodes: dict[int, SimNode] = {}
        self.queue: list[Message] = []
        self.timeouts = timeouts
        self.sink: ListTraceSink | None = _EnvSink(self) if trace else None
        # Whether trace events are formatted into `out` (scenario files) or only kept.
        self.recording = False
        # node -> partition group number; messages cross groups only when None.
        self.groups: dict[int, int] | None = None
        self.out: list[str] = []
        self.initial_members: tuple[int, ...] = ()
        # Every trace event of the run, in order (for trace files), when asked for.
        self.history: list[dict[str, object]] | None = [] if keep_history else None

    def trace_ndjson(self) -> str:
        """The run's trace in the NDJSON format of specs/README.md: a header line, then one
        line per event with `i` and `t_ns` (the event number: the harness has no clock)."""
        assert self.history is not None, "InteractionEnv(keep_history=True) records the trace"
        header = {
            "version": 1,
            "protocol": "raft",
            "nodes": sorted(self.nodes),
            "config": list(self.initial_members),
        }
        lines = [json.dumps({"header": header})]
        for i, event in enumerate(self.history):
            lines.append(json.dumps({"i": i, "t_ns": i, **event}))
        return "\n".join(lines) + "\n"

    # -- building ----------------------------------------------------------------------------

    def add_nodes(self, count: int, members: tuple[int, ...] | None = None, **cfg: Any) -> list[int]:
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + count))
        if members is None:
            members = tuple(ids) if not self.initial_members else self.initial_members
        if not self.initial_members:
            self.initial_members = members
        for node_id in ids:
            config = RaftConfig(node_id=node_id, members=members, **cfg)
            self.nodes[node_id] = SimNode(config, self.timeouts, self.sink)
        return ids

    # -- driving -----------------------------------------------------------------------------

    def process_ready(
        self, node_id: int, crash_before_persist: bool = False, crash_mid_persist: bool = False
    ) -> bool:
        """Runs one Ready of `node_id` in the contract's order. With `crash_before_persist`
        the node sends messages_now and then crashes: the Ready is lost. With
        `crash_mid_persist` the snapshot and entries reach the disk, the hard state does not."""
        node = self.nodes[node_id]
        core = node.core
        if not core.has_ready():
            return False
        rd = core.ready()
        if self.recording:
            self._ready_line(node_id, rd)
        self.queue.extend(rd.messages_now)
        if crash_before_persist:
            node.restart()
            if self.recording:
                self.out.append(f"{node_id}: crash before persist")
            return True
        if crash_mid_persist:
            node.storage.persist(msgspec.structs.replace(rd, hard_state=None))
            node.restart()
            if self.recording:
                self.out.append(f"{node_id}: crash before the hard state is persisted")
            return True
        node.storage.persist(rd)
        self.queue.extend(rd.messages_after_persist)
        if rd.snapshot is not None:
            node.applied = _applied_decoder.decode(rd.snapshot.data)
            if self.recording:
                meta = rd.snapshot.meta
                self.out.append(f"{node_id}: install snapshot {meta.index}@{meta.term}")
        for entry in rd.committed_entries:
            assert not node.applied or node.applied[-1][0] == entry.index - 1, (node.applied[-1:], entry)
            node.applied.append((entry.index, entry.term, entry.kind, tuple(entry.commands)))
            if self.recording:
                line = f"{node_id}: apply {entry.index}:{format_entry(entry)} {_commands(entry.commands)}"
                self.out.append(line.rstrip())
        for rs in rd.read_states:
            node.read_results.append((rs.ctx, rs.index))
            if self.recording:
                self.out.append(f"{node_id}: read {rs.ctx.decode(errors='replace')} index={rs.index}")
        core.advance(rd)
        return True

    def deliver(self, msg: Message) -> None:
        """Steps `msg` into its destination (through the codec), unless partitioned away."""
        if msg.dst not in self.nodes:
            self.drop(msg, "no_node")
            return
        if self.groups is not None and self.groups.get(msg.src) != self.groups.get(msg.dst):
            self.drop(msg, "partition")
            return
        if self.recording and not is_traced(msg):
            # Read-index messages have no trace event: the harness shows their delivery.
            self.out.append(f"{msg.dst}: receive {format_message(msg)}")
        self.nodes[msg.dst].core.step(decode_message(encode_message(msg)))

    def drop(self, msg: Message, reason: str) -> None:
        """The network loses `msg` (traced as the spec's DropMessage)."""
        self._network_event("DropMessage", msg, reason)

    def duplicate(self, msg: Message) -> None:
        """The network delivers `msg` twice: a second copy is queued (DuplicateMessage)."""
        self.queue.append(msg)
        self._network_event("DuplicateMessage", msg, None)

    def _network_event(self, action: str, msg: Message, reason: str | None) -> None:
        if not is_traced(msg):
            # Outside the spec: shown in a scenario's output, never put in the trace.
            if self.recording:
                line = f"{action} {format_message(msg)}"
                self.out.append(f"{line} ({reason})" if reason else line)
            return
        if self.sink is None:
            return
        event: dict[str, object] = {"node": msg.dst, "action": action, "msg": message_to_trace(msg)}
        if reason is not None:
            event["args"] = {"reason": reason}
        self.sink.emit(event)

    def deliver_one_at_random(self, rng: _Chance) -> None:
        """A chaotic network's step: one queued message, picked at random, is lost (8%),
        delivered twice (6%) or delivered once."""
        if not self.queue:
            return
        msg = self.queue.pop(rng.randrange(0, len(self.queue)))
        fate = rng.random()
        if fate < 0.08:
            self.drop(msg, "chaos")
            return
        if fate < 0.14:
            self.duplicate(msg)
        self.deliver(msg)

    def deliver_all(self, to: set[int] | None = None) -> int:
        """Delivers every message queued now (not the ones this produces), in queue order."""
        pending = self.queue
        self.queue = []
        delivered = 0
        for msg in pending:
            if to is not None and msg.dst not in to:
                self.queue.append(msg)
                continue
            self.deliver(msg)
            delivered += 1
        return delivered

    def stabilize(self, ids: set[int] | None = None, max_rounds: int = 10_000) -> None:
        for _ in range(max_rounds):
            progressed = False
            for node_id in sorted(self.nodes):
                if (ids is None or node_id in ids) and self.process_ready(node_id):
                    progressed = True
            if self.deliver_all(ids):
                progressed = True
            if not progressed:
                return
        raise AssertionError(f"no quiescence after {max_rounds} rounds")

    # -- scenario commands -------------------------------------------------------------------

    def handle(self, line: str) -> str:
        """Runs one scenario command; returns its output (trace lines and harness lines)."""
        self.out = []
        words = line.split()
        if not words:
            raise ScenarioError("empty command")
        name, args = words[0], words[1:]
        handler = _COMMANDS.get(name)
        if handler is None:
            raise ScenarioError(f"unknown command {name!r} (known: {', '.join(sorted(_COMMANDS))})")
        self.recording = True
        try:
            handler(self, args)
        finally:
            self.recording = False
        if self.sink is not None:
            self.sink.events.clear()
        return "\n".join(self.out) if self.out else "ok"

    def _node(self, word: str) -> SimNode:
        try:
            node_id = int(word)
        except ValueError:
            raise ScenarioError(f"expected a node id, got {word!r}") from None
        if node_id not in self.nodes:
            raise ScenarioError(f"no node {node_id}")
        return self.nodes[node_id]

    def _ready_line(self, node_id: int, rd: Ready) -> None:
        parts = [f"{node_id}: ready"]
        if rd.hard_state is not None:
            hs = rd.hard_state
            parts.append(f"hs=t{hs.term}/v{hs.vote}/c{hs.commit}")
        if rd.snapshot is not None:
            keep = "keep" if rd.snapshot.keep_log_suffix else "discard"
            parts.append(f"snap={rd.snapshot.meta.index}@{rd.snapshot.meta.term}({keep})")
        if rd.entries:
            parts.append(f"entries={rd.entries[0].index}..{rd.entries[-1].index}")
        if rd.messages_now or rd.messages_after_persist:
            parts.append(f"send={len(rd.messages_now)}+{len(rd.messages_after_persist)}")
        if rd.must_sync:
            parts.append("sync")
        self.out.append(" ".join(parts))


def _cmd_add_nodes(env: InteractionEnv, args: list[str]) -> None:
    if not args:
        raise ScenarioError("add-nodes: expected a count")
    count = int(args[0])
    members: tuple[int, ...] | None = None
    cfg: dict[str, Any] = {}
    keys = {
        "heartbeat": "heartbeat_ticks",
        "batch": "max_batch_size",
        "inflight": "max_inflight_appends",
        "max-msg": "max_message_size_bytes",
        "uncommitted": "max_uncommitted_entries",
        "reads": "max_pending_reads",
    }
    flags = {"prevote": "pre_vote", "checkquorum": "check_quorum"}
    for arg in args[1:]:
        key, _, value = arg.partition("=")
        if key == "members":
            members = tuple(int(v) for v in value.split(","))
        elif key in flags:
            if value not in ("on", "off"):
                raise ScenarioError(f"add-nodes: {key} must be on or off, got {value!r}")
            cfg[flags[key]] = value == "on"
        elif key in keys:
            cfg[keys[key]] = int(value)
        else:
            raise ScenarioError(f"add-nodes: unknown option {key!r}")
    ids = env.add_nodes(count, members, **cfg)
    env.out.append(f"added {','.join(map(str, ids))}")


def _cmd_campaign(env: InteractionEnv, args: list[str]) -> None:
    node = env._node(args[0])
    if not node.core.campaign():
        env.out.append(f"{node.config.node_id}: cannot campaign")


def _cmd_tick(env: InteractionEnv, args: list[str]) -> None:
    node = env._node(args[0])
    for _ in range(int(args[1]) if len(args) > 1 else 1):
        node.core.tick()


def _cmd_propose(env: InteractionEnv, args: list[str]) -> None:
    node = env._node(args[0])
    index = node.core.propose([a.encode() for a in args[1:]])
    env.out.append(f"{node.config.node_id}: propose -> {index}")


def _cmd_conf_change(env: InteractionEnv, args: list[str]) -> None:
    node = env._node(args[0])
    if len(args) != 3 or args[1] not in ("add", "remove"):
        raise ScenarioError("conf-change: expected `conf-change ID add|remove NODE`")
    change = ConfChange("add" if args[1] == "add" else "remove", int(args[2]))
    index = node.core.propose_conf_change(change)
    env.out.append(f"{node.config.node_id}: conf-change -> {index}")


def _cmd_read_index(env: InteractionEnv, args: list[str]) -> None:
    env._node(args[0]).core.read_index(args[1].encode())


def _cmd_compact(env: InteractionEnv, args: list[str]) -> None:
    node = env._node(args[0])
    index = int(args[1])
    if not node.compact(index):
        env.out.append(f"{node.config.node_id}: compact {index} refused")


def _cmd_process_ready(env: InteractionEnv, args: list[str]) -> None:
    for word in args:
        env.process_ready(env._node(word).config.node_id)


def _cmd_deliver_msgs(env: InteractionEnv, args: list[str]) -> None:
    env.deliver_all({env._node(a).config.node_id for a in args} if args else None)


def _cmd_drop_msgs(env: InteractionEnv, args: list[str]) -> None:
    targets = {env._node(a).config.node_id for a in args} if args else None
    keep: list[Message] = []
    dropped: list[Message] = []
    for msg in env.queue:
        (dropped if targets is None or msg.dst in targets else keep).append(msg)
    env.queue = keep
    for msg in dropped:
        env.drop(msg, "drop-msgs")


def _cmd_stabilize(env: InteractionEnv, args: list[str]) -> None:
    env.stabilize({env._node(a).config.node_id for a in args} if args else None)


def _cmd_partition(env: InteractionEnv, args: list[str]) -> None:
    groups: dict[int, int] = {}
    for k, group in enumerate(args):
        for word in group.split(","):
            groups[env._node(word).config.node_id] = k
    for node_id in env.nodes:
        groups.setdefault(node_id, len(args))
    env.groups = groups


def _cmd_heal(env: InteractionEnv, args: list[str]) -> None:
    env.groups = None


def _cmd_restart(env: InteractionEnv, args: list[str]) -> None:
    for word in args:
        env._node(word).restart()


def _cmd_status(env: InteractionEnv, args: list[str]) -> None:
    ids = [env._node(a).config.node_id for a in args] if args else sorted(env.nodes)
    for node_id in ids:
        core = env.nodes[node_id].core
        env.out.append(
            f"{node_id}: {core.role.value} term={core.term} leader={core.leader_id} "
            f"commit={core.commit_index} applied={core.applied_index} last={core.last_index} "
            f"snap={core.snapshot_meta.index}@{core.snapshot_meta.term} "
            f"config={','.join(map(str, core.config()))}"
        )


def _cmd_log(env: InteractionEnv, args: list[str]) -> None:
    node = env._node(args[0])
    log = node.core.log
    entries = " ".join(f"{e.index}:{format_entry(e)}" for e in log.entries)
    env.out.append(f"{node.config.node_id}: snap={log.snapshot.index}@{log.snapshot.term} {entries}".rstrip())


def _cmd_applied(env: InteractionEnv, args: list[str]) -> None:
    node = env._node(args[0])
    cmds = [c.decode(errors="replace") for a in node.applied for c in a[3]]
    env.out.append(f"{node.config.node_id}: applied={len(node.applied)} [{' '.join(cmds)}]")


def _cmd_rejected(env: InteractionEnv, args: list[str]) -> None:
    node = env._node(args[0])
    env.out.append(f"{node.config.node_id}: rejected {dict(sorted(node.core.rejected.items()))}")


_COMMANDS: dict[str, Callable[[InteractionEnv, list[str]], None]] = {
    "add-nodes": _cmd_add_nodes,
    "campaign": _cmd_campaign,
    "tick": _cmd_tick,
    "propose": _cmd_propose,
    "conf-change": _cmd_conf_change,
    "read-index": _cmd_read_index,
    "compact": _cmd_compact,
    "process-ready": _cmd_process_ready,
    "deliver-msgs": _cmd_deliver_msgs,
    "drop-msgs": _cmd_drop_msgs,
    "stabilize": _cmd_stabilize,
    "partition": _cmd_partition,
    "heal": _cmd_heal,
    "restart": _cmd_restart,
    "status": _cmd_status,
    "log": _cmd_log,
    "applied": _cmd_applied,
    "rejected": _cmd_rejected,
}


# -- formatting --------------------------------------------------------------------------------


def format_entry(entry: Entry) -> str:
    if entry.kind == CONFIG:
        return f"{entry.term}/config[{','.join(map(str, entry.config))}]"
    return f"{entry.term}/{entry.kind}"


def _commands(commands: list[bytes]) -> str:
    return " ".join(c.decode(errors="replace") for c in commands)


def format_message(msg: Message) -> str:
    head = f"{msg.src}->{msg.dst} {type(msg).__name__} t{msg.term}"
    if isinstance(msg, AppendEntries):
        first = msg.prev_log_index + 1
        ents = " ".join(f"{first + k}:{format_entry(e)}" for k, e in enumerate(msg.entries))
        return f"{head} prev={msg.prev_log_index}@{msg.prev_log_term} commit={msg.leader_commit} [{ents}]"
    if isinstance(msg, AppendEntriesResponse):
        return f"{head} {'ok' if msg.success else 'reject'} match={msg.match_index}"
    if isinstance(msg, RequestVote | PreVote):
        return f"{head} last={msg.last_log_index}@{msg.last_log_term}"
    if isinstance(msg, RequestVoteResponse | PreVoteResponse):
        return f"{head} {'granted' if msg.vote_granted else 'denied'}"
    if isinstance(msg, InstallSnapshot):
        return f"{head} snap={msg.snapshot_index}@{msg.snapshot_term} config={','.join(map(str, msg.config))}"
    if isinstance(msg, ReadIndex):
        return f"{head} ctxs={','.join(c.decode(errors='replace') for c in msg.ctxs)}"
    if isinstance(msg, ReadIndexResponse):
        ctxs = ",".join(c.decode(errors="replace") for c in msg.ctxs)
        return f"{head} ctxs={ctxs} index={msg.index}"
    assert isinstance(msg, InstallSnapshotResponse)
    return f"{head} match={msg.match_index}"


def format_event(event: dict[str, Any], initial_members: tuple[int, ...]) -> str:
    """One trace event as one line: node, action, message, args, then the state after."""
    if "state" not in event:  # the network's DropMessage / DuplicateMessage
        reason = event.get("args", {}).get("reason")
        line = f"{event['action']} {_format_trace_msg(event['msg'])}"
        return f"{line} ({reason})" if reason else line
    state = event["state"]
    parts = [f"{event['node']}: {event['action']}"]
    msg = event.get("msg")
    if msg is not None:
        parts.append(_format_trace_msg(msg))
    args = {k: v for k, v in event["args"].items() if k != "commands"}
    if args:
        parts.append(" ".join(f"{k}={_plain(v)}" for k, v in args.items()))
    vote = state["voted_for"] if state["voted_for"] is not None else "-"
    summary = (
        f"=> t{state['term']} {state['role']} v{vote} c{state['commit_index']} "
        f"last={state['last_index']}@{state['last_term']}"
    )
    if state["snapshot_index"]:
        summary += f" snap={state['snapshot_index']}@{state['snapshot_term']}"
    if tuple(state["config"]) != initial_members:
        summary += f" config={_plain(state['config'])}"
    parts.append(summary)
    return " ".join(parts)


def _plain(value: object) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _format_trace_msg(msg: dict[str, Any]) -> str:
    head = f"{msg['src']}->{msg['dst']} t{msg['term']}"
    kind = msg["type"]
    if kind == "AppendEntries":
        first = msg["prev_log_index"] + 1
        ents = " ".join(
            f"{first + k}:{e[0]}/{e[1]}" + (f"[{_plain(e[2])}]" if len(e) > 2 else "")
            for k, e in enumerate(msg["entries"])
        )
        return f"{head} prev={msg['prev_log_index']}@{msg['prev_log_term']} commit={msg['leader_commit']} [{ents}]"
    if kind == "AppendEntriesResponse":
        return f"{head} {'ok' if msg['success'] else 'reject'} match={msg['match_index']}"
    if kind in ("RequestVote", "PreVote"):
        return f"{head} last={msg['last_log_index']}@{msg['last_log_term']}"
    if kind in ("RequestVoteResponse", "PreVoteResponse"):
        return f"{head} {'granted' if msg['vote_granted'] else 'denied'}"
    if kind == "InstallSnapshot":
        return f"{head} snap={msg['snapshot_index']}@{msg['snapshot_term']} config={_plain(msg['config'])}"
    return f"{head} match={msg['match_index']}"
