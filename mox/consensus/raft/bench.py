"""Benchmark of the Raft core alone: `python -m mox.consensus.raft.bench [--rounds N]`.

A 3-node cluster in memory (`rafttest.InteractionEnv`: no disk, no network, every message
through the codec) replicates proposals of 100-byte commands; the leader gets `--batch`
proposals per round, then the cluster runs to quiescence. Printed beside it, measured in the
same run: the same messages through encode+decode only (the floor any core pays), and the
core with tracing on. Numbers, not assertions: compare them run to run on one machine.
"""

from __future__ import annotations

import argparse
import time

from mox.consensus.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    decode_message,
    encode_message,
)
from mox.consensus.raft.rafttest import InteractionEnv


def cluster_run(rounds: int, batch: int, trace: bool) -> tuple[float, int]:
    """Commands committed per second, and the number of core steps taken."""
    env = InteractionEnv(trace=trace)
    env.add_nodes(3)
    env.nodes[1].core.campaign()
    env.stabilize()
    leader = env.nodes[1].core
    steps = 0
    command = b"x" * 100
    start = time.perf_counter()
    for _ in range(rounds):
        for _ in range(batch):
            leader.propose([command])
        steps += len(env.queue)
        env.stabilize()
        if env.sink is not None:
            env.sink.events.clear()
    elapsed_s = time.perf_counter() - start
    assert leader.commit_index == 1 + rounds * batch
    return rounds * batch / elapsed_s, steps


def codec_run(count: int) -> float:
    """AppendEntries + response pairs encoded and decoded per second."""
    request = AppendEntries(1, 1, 2, 10, 1, [Entry(1, 11, "normal", [b"x" * 100])], 10)
    response = AppendEntriesResponse(1, 2, 1, True, 11)
    start = time.perf_counter()
    for _ in range(count):
        decode_message(encode_message(request))
        decode_message(encode_message(response))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if args.rounds < 1 or args.batch < 1:
        parser.error("--rounds and --batch must be >= 1")
    off, _ = cluster_run(args.rounds, args.batch, trace=False)
    on, _ = cluster_run(args.rounds, args.batch, trace=True)
    # Per committed command with one proposal per round: 2 AppendEntries + 2 responses, and
    # a commit broadcast of 2 + 2 more.
    codec = codec_run(args.rounds * args.batch)
    print(f"raft core, 3 nodes in memory, {args.rounds} rounds x {args.batch} proposals of 100 B")
    print(f"  core, tracing off    {off:10.0f} commands/s")
    print(f"  core, tracing on     {on:10.0f} commands/s")
    print(f"  baseline: codec only {codec:10.0f} request+response pairs/s (encode+decode)")


if __name__ == "__main__":
    main()
