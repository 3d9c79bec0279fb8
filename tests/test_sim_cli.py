"""`mox simulate`: runs, reports, writes traces and JSON, refuses bad flags with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mox.cli import cli
from mox.sim.cli import parse_seed_range


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["simulate", *args])
    return result.exit_code, result.output


def test_one_seed_passes_and_prints_a_summary() -> None:
    code, output = _invoke("--seed", "3", "--faults", "crash,loss", "--duration", "1")
    assert code == 0, output
    assert "seeds run" in output
    assert "violations" in output
    assert "check: linearizability" in output


def test_seed_range_writes_traces_and_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    traces = tmp_path / "traces"
    code, output = _invoke(
        "--seeds",
        "1..3",
        "--faults",
        "swarm",
        "--duration",
        "0.5",
        "--trace-dir",
        str(traces),
        "--json",
        str(out),
    )
    assert code == 0, output
    report = json.loads(out.read_text())
    assert report["totals"]["seeds"] == 3
    assert report["totals"]["violations"] == 0
    assert [s["seed"] for s in report["seeds"]] == [1, 2, 3]
    assert sorted(p.name for p in traces.iterdir()) == [
        "seed-1.ndjson",
        "seed-2.ndjson",
        "seed-3.ndjson",
    ]
    first = (traces / "seed-2.ndjson").read_text().splitlines()[0]
    assert json.loads(first)["header"]["seed"] == 2


def test_steps_bound_ends_the_fault_phase(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    code, output = _invoke("--seed", "4", "--faults", "none", "--steps", "50", "--json", str(out))
    assert code == 0, output
    # The fault phase (default 3 s) ended after 50 node steps, long before 3 s.
    assert json.loads(out.read_text())["seeds"][0]["simulated_s"] < 2.0


def test_same_seed_same_json(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.json", "b.json"):
        path = tmp_path / name
        code, output = _invoke(
            "--seed", "9", "--faults", "all", "--duration", "1", "--json", str(path)
        )
        assert code == 0, output
        report = json.loads(path.read_text())
        for seed in report["seeds"]:
            seed.pop("wall_s")
        report["totals"].pop("wall_s")
        outputs.append(report)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--seeds", "5..2"], "--seeds"),
        (["--seeds", "abc"], "--seeds"),
        (["--seed", "-1"], "--seed"),
        (["--seed", "1", "--nodes", "4"], "--nodes"),
        (["--seed", "1", "--faults", "meteor"], "--faults"),
        (["--seed", "1", "--faults", "crash=2"], "--faults"),
        (["--seed", "1", "--steps", "0"], "--steps"),
        (["--seed", "1", "--duration", "0"], "--duration"),
        ([], "--seed"),
        (["--seed", "1", "--seeds", "1..2"], "--seed"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args: list[str], flag: str) -> None:
    code, output = _invoke(*args)
    assert code == 2, output
    assert flag in output
    assert "Traceback" not in output


def test_seed_range_parser() -> None:
    assert parse_seed_range("1..3") == range(1, 4)
    assert parse_seed_range(" 7 .. 7 ") == range(7, 8)
    with pytest.raises(ValueError, match="empty"):
        parse_seed_range("3..1")
