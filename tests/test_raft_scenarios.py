"""Data-driven Raft scenarios (etcd's datadriven style) under tests/testdata/raft/*.txt.

A file is a sequence of blocks:

    # comments
    command args
    ----
    expected output (one line per trace event or harness line)
    <blank line>

The output of every command is compared with the file. MOX_UPDATE_GOLDEN=1 rewrites the
expected outputs from the current behaviour; review the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mox.consensus.raft.rafttest import InteractionEnv

DATA = Path(__file__).parent / "testdata" / "raft"
FILES = sorted(DATA.glob("*.txt"))


def parse_blocks(text: str, path: Path) -> list[tuple[list[str], str, str]]:
    """(comment lines, command, expected output) per block."""
    blocks: list[tuple[list[str], str, str]] = []
    lines = text.splitlines()
    k = 0
    comments: list[str] = []
    while k < len(lines):
        line = lines[k]
        if not line.strip():
            k += 1
            continue
        if line.startswith("#"):
            comments.append(line)
            k += 1
            continue
        command = line
        k += 1
        if k >= len(lines) or lines[k] != "----":
            raise AssertionError(f"{path}:{k + 1}: expected ---- after command {command!r}")
        k += 1
        out: list[str] = []
        while k < len(lines) and lines[k].strip():
            out.append(lines[k])
            k += 1
        blocks.append((comments, command, "\n".join(out)))
        comments = []
    if comments:
        blocks.append((comments, "", ""))
    return blocks


def render(blocks: list[tuple[list[str], str, str]]) -> str:
    out: list[str] = []
    for comments, command, expected in blocks:
        out.extend(comments)
        if command:
            out.extend([command, "----", expected, ""])
    return "\n".join(out).rstrip("\n") + "\n"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path) -> None:
    update = os.environ.get("MOX_UPDATE_GOLDEN") == "1"
    blocks = parse_blocks(path.read_text(), path)
    env = InteractionEnv()
    actual_blocks: list[tuple[list[str], str, str]] = []
    mismatches = []
    for comments, command, expected in blocks:
        if not command:
            actual_blocks.append((comments, command, expected))
            continue
        actual = env.handle(command)
        actual_blocks.append((comments, command, actual))
        if actual != expected:
            mismatches.append(f"{path.name}: {command}\n--- expected\n{expected}\n--- actual\n{actual}")
    if update:
        path.write_text(render(actual_blocks))
        return
    assert not mismatches, "\n\n".join(mismatches[:3])


def test_scenarios_exist() -> None:
    assert len(FILES) >= 6, [p.name for p in FILES]


def test_golden_mismatch_is_reported(tmp_path: Path) -> None:
    # The runner must be able to fail: a wrong expectation is a mismatch.
    env = InteractionEnv()
    assert env.handle("add-nodes 1") != "added 1"
