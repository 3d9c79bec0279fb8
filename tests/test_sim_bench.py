"""`mox bench sim` runs and reports every row (speed is measured, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mox.cli import cli


def test_bench_sim_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli, ["bench", "sim", "--seeds", "1", "--duration", "0.5", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(out.read_text())}
    assert list(rows) == ["swarm", "faults off", "core alone"]
    for row in rows.values():
        assert row["steps"] > 0
        assert row["wall_s"] > 0
    # The core-alone baseline commits as many commands as the swarm row's clients wrote.
    assert rows["core alone"]["commands"] >= rows["swarm"]["commands"]
    assert "steps/cpu s" in result.output
