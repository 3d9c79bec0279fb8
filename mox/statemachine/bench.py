"""Benchmark of `StateMachine.apply`, beside the raw LSM write it ends in.

    python -m mox.statemachine.bench [--count 20000] [--dir PATH]

Baseline: `LsmStore.write_batch` of the same number of batches, each the same size as a
RegisterTalent's (talent + handle index + event + session), pre-encoded. Measured: apply of
RegisterTalent and of UpdateProfile commands (decode, session check, validation, reads,
encode, one write batch). The difference is the state machine's own cost per command.
Numbers only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time

from mox.io.real import RealFileSystem
from mox.statemachine.commands import (
    CreateTenant,
    NewApiKey,
    RegisterTalent,
    SocialAccountIn,
    UpdateProfile,
    encode_command,
    make_command,
)
from mox.statemachine.machine import StateMachine
from mox.storage.lsm import LsmStore

_SCOPES = ["tenant:admin", "talents:read", "talents:write"]


def _rate(label: str, count: int, elapsed_s: float, baseline_s: float | None) -> str:
    per_op_us = elapsed_s / count * 1e6
    line = f"{label:<34} {count / elapsed_s:>10,.0f} ops/s {per_op_us:>8.1f} us/op"
    if baseline_s is not None:
        line += f"   x{elapsed_s / baseline_s:.2f} of baseline"
    return line


async def _run(count: int, root: str) -> list[str]:
    lines: list[str] = []
    store = await LsmStore.open(RealFileSystem(root + "/base", backend="pwrite"))
    value_bytes = 300
    started = time.perf_counter()
    for index in range(1, count + 1):
        key = f"t/T1/talent/{index:020d}".encode()
        store.write_batch(
            [
                (key, b"v" * value_bytes),
                (key + b"/h", b"x"),
                (key + b"/e", b"e" * value_bytes),
                (f"t/T1/s/c{index}".encode(), b"s" * value_bytes),
            ],
            index,
        )
    baseline_s = time.perf_counter() - started
    await store.close()
    lines.append(_rate("baseline: LSM write_batch (4 ops)", count, baseline_s, None))

    store = await LsmStore.open(RealFileSystem(root + "/sm", backend="pwrite"))
    machine = StateMachine(store)
    owner = NewApiKey(key_id="k1", secret_sha256=hashlib.sha256(b"s").hexdigest(), scopes=_SCOPES)
    machine.apply(
        1,
        encode_command(
            make_command(CreateTenant(slug="bench", name="Bench", owner_key=owner), tenant_id="T1")
        ),
    )
    registers = [
        encode_command(
            make_command(
                RegisterTalent(
                    talent_id=f"a{n}",
                    display_name=f"Talent {n}",
                    emails=[f"t{n}@example.com"],
                    accounts=[SocialAccountIn(platform="instagram", handle=f"h{n}")],
                ),
                tenant_id="T1",
                client_id=f"c{n}",
                request_seq=1,
                actor="apikey:k1",
            )
        )
        for n in range(count)
    ]
    started = time.perf_counter()
    for n, data in enumerate(registers):
        machine.apply(n + 2, data)
    register_s = time.perf_counter() - started
    lines.append(_rate("apply RegisterTalent", count, register_s, baseline_s))
    updates = [
        encode_command(
            make_command(
                UpdateProfile(talent_id=f"a{n}", expected_version=1, display_name=f"Renamed {n}"),
                tenant_id="T1",
                client_id=f"c{n}",
                request_seq=2,
                actor="apikey:k1",
            )
        )
        for n in range(count)
    ]
    base_index = count + 2
    started = time.perf_counter()
    for n, data in enumerate(updates):
        machine.apply(base_index + n, data)
    update_s = time.perf_counter() - started
    lines.append(_rate("apply UpdateProfile (expected ver.)", count, update_s, baseline_s))
    await store.close()
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="commands per measurement")
    parser.add_argument(
        "--dir", default=None, help="directory for the stores (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        for line in asyncio.run(_run(args.count, root)):
            print(line)


if __name__ == "__main__":
    main()
