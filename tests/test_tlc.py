"""checker.tlc and `mox tlc` on tiny specs written to tmp_path, run by the real TLC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from checker.tlc import (
    ModelValue,
    Record,
    TlaFunction,
    compare_with_manifest,
    format_value,
    load_manifest,
    parse_output,
    parse_value,
    run_tlc,
)
from checker.tlc_cli import module_for_cfg

COUNTER = """---- MODULE Counter ----
EXTENDS Naturals
VARIABLES x, note
Init == x = 0 /\\ note = "start"
Step == x < {limit} /\\ x' = x + 1 /\\ note' = "step"
Next == Step
Spec == Init /\\ [][Next]_<<x, note>>
Small == x < {bound}
Grows == [][x' > x]_<<x, note>>
Shrinks == [][x' < 2]_<<x, note>>
====
"""


@pytest.fixture(autouse=True)
def tlc_output_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLC's output directories go under tmp_path, not the system temporary directory."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))


def write_spec(folder: Path, *, limit: int = 3, bound: int = 10, cfg: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Counter.tla").write_text(COUNTER.format(limit=limit, bound=bound))
    (folder / "Counter.cfg").write_text(cfg or "INIT Init\nNEXT Next\nINVARIANT Small\n")
    return folder


def test_passing_model_counts_states(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, limit=3)
    result = run_tlc(spec, "Counter", "Counter.cfg", check_deadlock=False)
    assert result.outcome == "ok", result.message
    assert result.violated is None
    assert result.distinct_states == 4  # x = 0, 1, 2, 3
    assert result.states_generated == 4
    assert result.depth == 4
    assert result.counterexample == ()
    assert result.exit_code == 0
    assert "Model checking completed" in result.output_path.read_text()


def test_invariant_violation_has_counterexample(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, limit=5, bound=2)
    result = run_tlc(spec, "Counter", "Counter.cfg")
    assert result.outcome == "invariant_violated"
    assert result.violated == "Small"
    assert result.exit_code == 12
    states = result.counterexample
    assert [s.number for s in states] == [1, 2, 3]
    assert [s.value("x") for s in states] == [0, 1, 2]
    assert states[0].action == "Initial predicate"
    assert states[1].action == "Step"
    assert states[1].location is not None and "module Counter" in states[1].location
    assert states[2].value("note") == "step"


def test_action_property_violation(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path, limit=5, cfg="SPECIFICATION Spec\nPROPERTIES Grows Shrinks\n"
    )
    result = run_tlc(spec, "Counter", "Counter.cfg", check_deadlock=False)
    assert result.outcome == "property_violated"
    assert result.violated == "Shrinks"
    assert result.counterexample[-1].value("x") == 2


def test_deadlock_is_reported_unless_disabled(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, limit=2)
    result = run_tlc(spec, "Counter", "Counter.cfg", check_deadlock=True)
    assert result.outcome == "deadlock"
    assert result.exit_code == 11
    assert result.counterexample[-1].value("x") == 2
    assert run_tlc(spec, "Counter", "Counter.cfg", check_deadlock=False).outcome == "ok"


def test_parse_error_is_an_error_with_a_message(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    (spec / "Counter.tla").write_text("---- MODULE Counter ----\nVARIABLE x\nInit == x = \n====\n")
    result = run_tlc(spec, "Counter", "Counter.cfg")
    assert result.outcome == "error"
    assert result.message is not None and "Parse Error" in result.message


def test_config_error_names_the_problem(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, cfg="INIT Init\nNEXT Next\nINVARIANT NoSuchInvariant\n")
    result = run_tlc(spec, "Counter", "Counter.cfg")
    assert result.outcome == "error"
    assert result.exit_code not in (0, 11, 12, 13)
    assert result.message is not None and "NoSuchInvariant" in result.message


def test_simulation_runs_and_counts(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, limit=4)
    result = run_tlc(
        spec, "Counter", "Counter.cfg", simulate=True, num=5, depth=10, seed=3,
        check_deadlock=False,
    )
    assert result.outcome == "ok", result.message
    assert result.states_generated is not None and result.states_generated > 0
    assert result.distinct_states is None


def test_bad_paths_and_options_raise_tlc_error(tmp_path: Path) -> None:
    from checker.tlc import TlcError

    spec = write_spec(tmp_path)
    with pytest.raises(TlcError, match=r"Missing\.tla"):
        run_tlc(spec, "Missing", "Counter.cfg")
    with pytest.raises(TlcError, match=r"nope\.cfg"):
        run_tlc(spec, "Counter", "nope.cfg")
    with pytest.raises(TlcError, match="num"):
        run_tlc(spec, "Counter", "Counter.cfg", simulate=True)


# ---- the TLA+ value parser ----------------------------------------------------------------


def test_parse_value_kinds() -> None:
    text = (
        '( s1 :> [term |-> 2, kind |-> "config", value |-> {s1, s2}] @@ '
        "s2 :> <<1, -3, TRUE, FALSE, <<>>, {}>> )"
    )
    value = parse_value(text)
    assert isinstance(value, TlaFunction)
    s1, s2 = ModelValue("s1"), ModelValue("s2")
    assert value[s1] == Record({"term": 2, "kind": "config", "value": frozenset({s1, s2})})
    assert value[s2] == (1, -3, True, False, (), frozenset())
    assert parse_value('"a \\"quoted\\" \\\\ word"') == 'a "quoted" \\ word'
    assert parse_value("2..4") == frozenset({2, 3, 4})
    assert parse_value("(7)") == 7
    # Records and functions are hashable, so they can sit in sets.
    assert len(parse_value("{[a |-> 1], [a |-> 1], [a |-> 2]}")) == 2


def test_format_value_round_trips() -> None:
    text = '(s1 :> [term |-> 1, kind |-> "noop", value |-> Nil] @@ s2 :> <<{1, 2}, "x">>)'
    value = parse_value(text)
    assert parse_value(format_value(value)) == value
    assert format_value(parse_value("{s2, s1}")) == "{s1, s2}"


@pytest.mark.parametrize("text", ["[a |-> ]", "<<1, 2", "(a :> 1 @@)", "1 2", "#"])
def test_parse_value_rejects_garbage_naming_the_offset(text: str) -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_value(text)


def test_parse_output_reads_wrapped_values_and_single_variable_states(tmp_path: Path) -> None:
    output = "\n".join(
        [
            "Error: Invariant Inv is violated.",
            "Error: The behavior up to this point is:",
            "State 1: <Initial predicate>",
            "/\\ f = ( a :> 1 @@",
            "  b :> 2 )",
            "/\\ g = 0",
            "",
            "State 2: <Act line 3, col 1 to line 3, col 9 of module M>",
            "/\\ f = (a :> 1 @@ b :> 3)",
            "/\\ g = 1",
            "",
            "3 states generated, 2 distinct states found, 0 states left on queue.",
        ]
    )
    result = parse_output(output, 12, 0.5, tmp_path / "out")
    assert result.outcome == "invariant_violated" and result.violated == "Inv"
    assert result.distinct_states == 2 and result.depth == 2
    first, second = result.counterexample
    assert first.value("f") == TlaFunction({ModelValue("a"): 1, ModelValue("b"): 2})
    assert second.action == "Act"
    # The exit code and the text must agree; otherwise it is an error, never "ok".
    assert parse_output(output, 0, 0.5, tmp_path / "out").outcome == "error"


def test_module_for_cfg_picks_longest_prefix(tmp_path: Path) -> None:
    for name in ("MC.tla", "MCRaft.tla", "Raft.tla", "MCRaftElection.cfg"):
        (tmp_path / name).write_text("")
    assert module_for_cfg(tmp_path / "MCRaftElection.cfg") == "MCRaft"


# ---- manifests ----------------------------------------------------------------------------


def write_manifest(folder: Path, **expected: object) -> Path:
    manifest = folder / "manifest.json"
    entry = {
        "name": "Counter",
        "module": "Counter",
        "cfg": "counter/Counter.cfg",
        "mode": "exhaustive",
        "options": {"workers": 1, "check_deadlock": False},
        "expected": {"result": "ok", "violated": None, "distinct_states": 4, **expected},
        "ci": True,
    }
    manifest.write_text(json.dumps({"version": 1, "models": [entry]}))
    return manifest


def test_manifest_comparison(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write_spec(specs / "counter", limit=3)
    (entry,) = load_manifest(write_manifest(specs))
    result = run_tlc(entry.spec_dir, entry.module, entry.cfg, check_deadlock=False)
    assert compare_with_manifest(entry, result) == []
    (wrong,) = load_manifest(write_manifest(specs, distinct_states=5))
    assert compare_with_manifest(wrong, result) == ["expected 5 distinct states, got 4"]
    (violation,) = load_manifest(write_manifest(specs, result="violation", violated="Small"))
    assert "expected a violation of Small" in compare_with_manifest(violation, result)[0]


def test_manifest_errors_name_the_key(tmp_path: Path) -> None:
    from checker.tlc import TlcError

    manifest = write_manifest(tmp_path, result="maybe")
    with pytest.raises(TlcError, match=r"expected\.result"):
        load_manifest(manifest)
    manifest.write_text('{"models": [{"name": "x"}]}')
    with pytest.raises(TlcError, match="'cfg'"):
        load_manifest(manifest)
    manifest.write_text("{not json")
    with pytest.raises(TlcError, match="line 1"):
        load_manifest(manifest)


# ---- the CLI ------------------------------------------------------------------------------


def mox(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mox.cli", "tlc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_cli_exit_codes(tmp_path: Path) -> None:
    good = write_spec(tmp_path / "good", limit=3)
    run = mox(str(good / "Counter.cfg"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok" in run.stdout and "distinct 4" in run.stdout

    bad = write_spec(tmp_path / "bad", limit=5, bound=2)
    json_path = tmp_path / "result.json"
    run = mox(str(bad / "Counter.cfg"), "--json", str(json_path), cwd=tmp_path)
    assert run.returncode == 1
    assert "invariant_violated (Small)" in run.stdout
    assert "state   3  Step" in run.stdout  # the counterexample table
    (payload,) = json.loads(json_path.read_text())
    assert payload["violated"] == "Small" and len(payload["counterexample"]) == 3

    run = mox(str(tmp_path / "missing.cfg"), cwd=tmp_path)
    assert run.returncode == 2 and "missing.cfg" in run.stderr
    run = mox(str(good / "Counter.cfg"), "--num", "3", cwd=tmp_path)
    assert run.returncode == 2 and "--num needs --simulate" in run.stderr
    run = mox(str(good / "Counter.cfg"), "--workers", "0", cwd=tmp_path)
    assert run.returncode == 2 and "--workers" in run.stderr
    run = mox(cwd=tmp_path)
    assert run.returncode == 2 and "CFG" in run.stderr
    run = mox(str(good / "Counter.tla"), cwd=tmp_path)
    assert run.returncode == 2 and "not a TLC model config" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_compares_with_the_manifest(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write_spec(specs / "counter", limit=3)
    write_manifest(specs, distinct_states=5)
    run = mox("specs/counter/Counter.cfg", cwd=tmp_path)
    assert run.returncode == 1
    assert "MISMATCH: expected 5 distinct states, got 4" in run.stdout
    write_manifest(specs, distinct_states=4)
    run = mox("--all-ci", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 of 1 CI models as expected" in run.stdout


def test_cli_without_java_says_what_to_install(tmp_path: Path) -> None:
    good = write_spec(tmp_path, limit=3)
    env = {**os.environ, "PATH": str(tmp_path / "nothing-here")}
    run = mox(str(good / "Counter.cfg"), cwd=tmp_path, env=env)
    assert run.returncode == 2
    assert "default-jre-headless" in run.stderr
    assert "Traceback" not in run.stderr
