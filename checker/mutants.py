"""Deliberately broken Raft cores and the scenarios that expose them (the rejected corpus).

Each mutant is a subclass of the real `RaftCore` that overrides one method with a known
Raft bug; nothing in `mox/consensus/raft/` is edited. A scenario is a list of commands of
the core's scenario harness (`mox.consensus.raft.rafttest`, the commands of the files under
`tests/testdata/raft/`). `run_scenario(commands, core)` runs it on an in-memory cluster whose
nodes are built from `core` and returns the run's NDJSON trace.

The corpus needs the pair: the same scenario with the real core must be accepted (else the
rejection says nothing about the mutant) and with the mutant rejected. `tests/test_corpus.py`
checks both, and `python -m checker.mutants OUT_DIR` regenerates the corpus files.

Which bug each mutant has, and where trace validation catches it, is in `MUTANTS`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs

import mox
from mox.consensus.raft import rafttest
from mox.consensus.raft.core import RaftCore, Role
from mox.consensus.raft.messages import (
    CONFIG,
    AppendEntries,
    AppendEntriesResponse,
    Message,
    RequestVoteResponse,
)
from mox.consensus.raft.quorum import committed_index

__all__ = [
    "MUTANTS",
    "SCENARIOS",
    "AcceptStaleAppendEntries",
    "CommitPreviousTermByCounting",
    "Mutant",
    "NoStepDownOnHigherTerm",
    "NoTruncateConflict",
    "VoteSentBeforePersist",
    "run_scenario",
    "scenario_commands",
    "write_corpus",
]

class CommitPreviousTermByCounting(RaftCore):
    """Commits an entry of an earlier term once a majority holds it (Raft paper, Figure 8):
    the check that the entry has the leader's own term is missing."""

    def maybe_commit(self) -> None:
        if self.role is not Role.LEADER:
            return
        log = self.log
        stable = log.stable_index

        def match_of(node: int) -> int:
            return stable if node == self.id else self._progress_of(node).match_index

        index = committed_index(log.config(), match_of)
        if index <= log.commit_index:  # BUG: no `log.term_at(index) == self.term`
            return
        log.commit_index = index
        if self._tracing:
            self._emit("AdvanceCommitIndex", args={"index": index})
        self._commit_broadcast_pending = True


class NoTruncateConflict(RaftCore):
    """A follower keeps its own entry where the leader's has another term, and appends only
    past its last index: the conflicting suffix is never truncated."""

    def handle_append_entries(self, m: AppendEntries) -> None:
        if self.role is Role.CANDIDATE:
            self.become_follower(self.term, m.src)
        self.leader_id = m.src
        self._election_elapsed_ticks = 0
        log = self.log
        prev = m.prev_log_index
        if prev > log.last_index() or (prev >= log.snapshot.index and log.term_at(prev) != m.prev_log_term):
            hint = min(prev - 1, log.last_index()) if prev > 0 else 0
            self._send(AppendEntriesResponse(self.term, self.id, m.src, False, hint, m.read_round))
        else:
            for entry in m.entries:
                if entry.index <= log.last_index():
                    continue  # BUG: keeps a conflicting entry instead of truncating from it
                log.append(entry)
                if entry.kind == CONFIG:
                    self._known.update(entry.config)
            last_new = prev + len(m.entries)
            log.commit_index = max(log.commit_index, min(m.leader_commit, last_new, log.last_index()))
            self._send(AppendEntriesResponse(self.term, self.id, m.src, True, last_new, m.read_round))
        if self._tracing:
            self._emit("HandleAppendEntriesRequest", m)


class AcceptStaleAppendEntries(RaftCore):
    """A follower handles an AppendEntries from an older term (a deposed leader) as if it
    came from the current leader, instead of discarding it."""

    def step(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries) and msg.term < self.term and self.role is not Role.LEADER:
            self.handle_append_entries(msg)  # BUG: no DropStaleMessage
            return
        super().step(msg)


class NoStepDownOnHigherTerm(RaftCore):
    """A leader that sees a higher term adopts it but stays leader."""

    def step(self, msg: Message) -> None:
        if msg.term > self.term and self.role is Role.LEADER:
            # BUG: no become_follower. (The vote is kept: the core asserts that a leader
            # voted for itself, and the point here is the role.)
            self.term = msg.term
            if self._tracing:
                self._emit("UpdateTerm", msg)
            return
        super().step(msg)


class VoteSentBeforePersist(RaftCore):
    """A vote is sent at once (with the Ready's messages_now) instead of after the Ready's
    hard state, which records it, is durable."""

    def _send(self, msg: Message) -> None:
        if isinstance(msg, RequestVoteResponse) and msg.vote_granted:
            self._msgs_now.append(msg)  # BUG: a vote must leave only after it is persisted
            return
        super()._send(msg)


# Commands of the core's scenario harness (see tests/testdata/raft/*.txt).
SCENARIOS: dict[str, list[str]] = {
    # Node 1 leads term 1 and replicates its no-op to node 2 only; the ack is lost. Node 2
    # is elected in term 2 (node 3 votes) and brings node 3 up one entry at a time: node 3
    # then holds index 1 (term 1) while the leader's own entry (index 2, term 2) is not yet
    # on a majority.
    "previous_term_commit": [
        "add-nodes 3 batch=1 prevote=off checkquorum=off",
        "campaign 1",
        "process-ready 1",
        "deliver-msgs 2 3",
        "process-ready 2 3",
        "deliver-msgs 1",
        "process-ready 1",
        "deliver-msgs 2",
        "drop-msgs 3",
        "process-ready 2",
        "drop-msgs",
        "partition 1 2,3",
        "campaign 2",
        "stabilize 2 3",
        "status",
    ],
    # Node 1 appends entries while cut off; node 2 leads term 2; node 1 comes back and must
    # replace its uncommitted suffix (the core's own log_conflict scenario).
    "log_conflict": [
        "add-nodes 3 prevote=off checkquorum=off",
        "campaign 1",
        "stabilize",
        "partition 1 2,3",
        "propose 1 lost1",
        "propose 1 lost2",
        "stabilize",
        "campaign 2",
        "stabilize",
        "propose 2 kept",
        "stabilize",
        "heal",
        "tick 2 1",
        "stabilize",
        "status",
    ],
    # The deposed leader (node 1) keeps sending AppendEntries of term 1 after node 3 leads
    # term 2; a follower must drop them (the core's partitioned_leader scenario).
    "partitioned_leader": [
        "add-nodes 3 prevote=off checkquorum=off",
        "campaign 1",
        "stabilize",
        "partition 1 2,3",
        "propose 1 stale",
        "stabilize",
        "tick 3 12",
        "stabilize",
        "propose 3 fresh",
        "stabilize",
        "heal",
        "propose 1 again",
        "tick 1 1",
        "stabilize",
        "tick 3 2",
        "stabilize",
        "status",
    ],
    # Node 2 grants node 1 its vote and crashes before the Ready that persists the vote.
    "vote_then_crash": [
        "add-nodes 3 prevote=off checkquorum=off",
        "campaign 1",
        "process-ready 1",
        "deliver-msgs 2",
        "crash-before-persist 2",
        "deliver-msgs 1",
        "stabilize",
        "status",
    ],
}


@attrs.frozen
class Mutant:
    """A broken core, the scenario that exposes it, and what the corpus note says."""

    name: str
    core: type[RaftCore]
    scenario: str
    bug: str
    expected_action: str


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "commit_previous_term_by_counting",
            CommitPreviousTermByCounting,
            "previous_term_commit",
            "The leader of term 2 commits index 1 (an entry of term 1) as soon as a majority "
            "holds it. Raft forbids committing an earlier term's entry by counting replicas: "
            "a later leader may still overwrite it (paper, Figure 8). The spec's "
            "AdvanceCommitIndex only commits an entry of the leader's own term.",
            "AdvanceCommitIndex",
        ),
        Mutant(
            "no_truncate_conflict",
            NoTruncateConflict,
            "log_conflict",
            "Node 1 keeps its uncommitted entries of term 1 where the leader of term 2 sends "
            "entries of term 2 at the same indexes, instead of truncating its log there. Its "
            "log then disagrees with the leader's below the leader's commit index. The spec's "
            "HandleAppendEntriesRequest truncates the conflicting suffix.",
            "HandleAppendEntriesRequest",
        ),
        Mutant(
            "accept_stale_append_entries",
            AcceptStaleAppendEntries,
            "partitioned_leader",
            "A follower of term 2 handles an AppendEntries of term 1 from the deposed leader as "
            "if it were current (and acknowledges it). The spec handles a request only when "
            "its term is the receiver's term; an older one is DropStaleMessage.",
            "HandleAppendEntriesRequest",
        ),
        Mutant(
            "no_step_down_on_higher_term",
            NoStepDownOnHigherTerm,
            "partitioned_leader",
            "The deposed leader hears of term 2 and adopts the term but stays leader, so two "
            "leaders claim term 2. The spec's UpdateTerm makes the server a follower.",
            "UpdateTerm",
        ),
        Mutant(
            "vote_sent_before_persist",
            VoteSentBeforePersist,
            "vote_then_crash",
            "Node 2 sends its vote before the vote is durable and then crashes: after the "
            "restart it has no record of the vote and may vote again in the same term. In "
            "the spec a vote waits in the voter's outbox until PersistState, and a crash "
            "loses the outbox: node 1 receives a vote that was never sent. With the real "
            "core the vote waits for the persist and is lost with the crash.",
            "HandleRequestVoteResponse",
        ),
    )
}


@contextlib.contextmanager
def _core_class(core: type[RaftCore]) -> Iterator[None]:
    """Builds the harness's nodes from `core` (the harness names RaftCore at module level)."""
    namespace = vars(rafttest)
    saved = namespace["RaftCore"]
    namespace["RaftCore"] = core
    try:
        yield
    finally:
        namespace["RaftCore"] = saved


def run_scenario(commands: list[str], core: type[RaftCore] = RaftCore) -> str:
    """Runs harness commands on a cluster of `core`s; returns the NDJSON trace.

    `crash-before-persist N` (not a harness command) runs node N's next Ready up to its
    messages_now, then crashes the node: the Ready is never persisted.
    """
    with _core_class(core):
        env = rafttest.InteractionEnv(keep_history=True)
        for command in commands:
            words = command.split()
            if words[0] == "crash-before-persist":
                env.process_ready(int(words[1]), crash_before_persist=True)
                continue
            env.handle(command)
        return env.trace_ndjson()


def scenario_commands(path: Path) -> list[str]:
    """The commands of a datadriven scenario file: each line right before a `----` line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    commands = []
    for k, line in enumerate(lines[1:], start=1):
        previous = lines[k - 1].strip()
        if line.strip() == "----" and previous and not previous.startswith("#"):
            commands.append(previous)
    return commands


def _with_header(trace: str, extra: dict[str, object]) -> str:
    lines = trace.splitlines()
    header = json.loads(lines[0])
    header["header"]["mox_version"] = mox.__version__
    header["header"].update(extra)
    return "\n".join([json.dumps(header), *lines[1:]]) + "\n"


def write_corpus(out_dir: Path, scenario_dir: Path | None = None) -> list[Path]:
    """Writes `accepted/` (real core: each scenario, and each harness scenario file) and
    `rejected/` (each mutant, with a `.md` note) under `out_dir`. Returns the files."""
    written: list[Path] = []
    accepted = out_dir / "accepted"
    rejected = out_dir / "rejected"
    accepted.mkdir(parents=True, exist_ok=True)
    rejected.mkdir(parents=True, exist_ok=True)
    sources: dict[str, list[str]] = {}
    if scenario_dir is not None:
        for path in sorted(scenario_dir.glob("*.txt")):
            sources[f"scenario-{path.stem}"] = scenario_commands(path)
    for name, commands in SCENARIOS.items():
        sources[f"scenario-{name}"] = commands
    for name, commands in sources.items():
        path = accepted / f"{name}.ndjson"
        path.write_text(_with_header(run_scenario(commands), {"source": f"rafttest: {name}"}))
        written.append(path)
    for mutant in MUTANTS.values():
        commands = SCENARIOS[mutant.scenario]
        path = rejected / f"mutant-{mutant.name}.ndjson"
        path.write_text(
            _with_header(
                run_scenario(commands, mutant.core),
                {"source": f"mutant {mutant.core.__name__} on scenario {mutant.scenario}"},
            )
        )
        note = rejected / f"mutant-{mutant.name}.md"
        note.write_text(
            f"# {mutant.name}\n\nBroken core: `checker.mutants.{mutant.core.__name__}` "
            f"({(mutant.core.__doc__ or '').strip()})\n\nScenario: `{mutant.scenario}` in "
            f"`checker/mutants.py`.\n\nThe bug: {mutant.bug}\n\nExpected verdict: rejected at "
            f"a `{mutant.expected_action}` line.\n",
            encoding="utf-8",
        )
        written.extend([path, note])
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path, help="corpus directory (e.g. traces/raft)")
    parser.add_argument("--scenarios", type=Path, default=None, help="tests/testdata/raft")
    args = parser.parse_args(argv)
    for path in write_corpus(args.out_dir, args.scenarios):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
