"""Every CI model of specs/manifest.json, run by the real TLC and compared with the manifest.

A model that must pass is compared on outcome and exact distinct-state count (a change in
the count means the spec or the bounds changed: update the manifest on purpose). A model
that must be violated (reachability checks NR_*, the quorum mutant) is compared on the
name of the violated invariant or property, and its counterexample is checked to end in the
situation the check names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from checker.tlc import ManifestEntry, ModelValue, compare_with_manifest, load_manifest, run_model

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "specs" / "manifest.json"
ENTRIES = load_manifest(MANIFEST)
CI = [e for e in ENTRIES if e.ci]
OPT_IN = [e for e in ENTRIES if not e.ci]


def test_manifest_lists_every_model_config() -> None:
    listed = {e.cfg_path.resolve() for e in ENTRIES}
    on_disk = {p.resolve() for p in (ROOT / "specs" / "raft").glob("MCRaft*.cfg")}
    assert on_disk, "no bounded models found"
    assert on_disk == listed
    for entry in ENTRIES:
        assert (entry.spec_dir / f"{entry.module}.tla").is_file(), entry.name
        if entry.mode == "exhaustive" and entry.ci:
            assert entry.expected_distinct_states is not None, entry.name
        if entry.mode == "simulate":
            assert entry.num is not None and entry.depth is not None, entry.name


def _operators(module: Path) -> set[str]:
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\([^)]*\))? ==", module.read_text(), re.M))


def test_every_action_of_the_readme_table_is_a_spec_operator() -> None:
    readme = (ROOT / "specs" / "README.md").read_text()
    actions = re.findall(r"^\| `([A-Za-z]+)\(", readme, re.M)
    assert len(actions) >= 20
    defined = _operators(ROOT / "specs" / "raft" / "Raft.tla")
    assert [a for a in actions if a not in defined] == []
    # ... and the bounded models wrap each one (MC<action>), so counterexamples name it.
    wrapped = _operators(ROOT / "specs" / "raft" / "MCRaft.tla")
    assert [a for a in actions if f"MC{a}" not in wrapped] == []


def _param(entry: ManifestEntry) -> object:
    # Models of more than ~50k distinct states take 10-30 s each on this machine.
    slow = (entry.expected_distinct_states or 0) > 50_000
    return pytest.param(entry, id=entry.name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("entry", [_param(e) for e in CI])
def test_ci_model(entry: ManifestEntry, tmp_path: Path) -> None:
    result = run_model(entry, timeout_s=600, output_dir=tmp_path)
    assert compare_with_manifest(entry, result) == [], result.output_path
    if entry.expected_result == "ok":
        assert result.counterexample == ()
        assert result.states_generated is not None and result.states_generated > 0
        return
    last = result.counterexample[-1]
    if entry.expected_violated == "NR_LeaderElected":
        assert "leader" in last.value("state").values()
        if "PreVote" in entry.name:
            # Elected through a pre-vote: the classic Timeout is disabled in that model.
            actions = [step.action for step in result.counterexample]
            assert "MCBecomeCandidate" in actions and "MCTimeout" not in actions, actions
    elif entry.expected_violated == "NR_PreVoteRefused":
        state = last.value("state")
        responded, granted = last.value("votesResponded"), last.value("votesGranted")
        refused = [
            s
            for s, role in state.items()
            if role == "pre_candidate" and len(set(responded[s]) - set(granted[s])) >= 2
        ]
        assert len(refused) == 1, (state, responded, granted)
    elif entry.expected_violated == "NR_EntryCommitted":
        assert any(c["entry"]["kind"] == "normal" for c in last.value("committed"))
    elif entry.expected_violated == "NR_MembershipChanged":
        assert any(c["entry"]["kind"] == "config" for c in last.value("committed"))
    elif entry.expected_violated == "NR_SnapshotInstalled":
        before, after = result.counterexample[-2], last
        assert after.action == "MCHandleInstallSnapshotRequest"
        grew = [
            s
            for s, index in after.value("snapshotIndex").items()
            if index > before.value("commitIndex")[s]
        ]
        assert len(grew) == 1 and isinstance(grew[0], ModelValue)
    elif entry.expected_violated == "ElectionSafety":
        state, term = last.value("state"), last.value("currentTerm")
        leaders = [s for s, role in state.items() if role == "leader"]
        assert len(leaders) == 2 and term[leaders[0]] == term[leaders[1]]
    else:
        pytest.fail(f"no check of the counterexample for {entry.expected_violated}")


@pytest.mark.soak
@pytest.mark.parametrize("entry", OPT_IN, ids=[e.name for e in OPT_IN])
def test_opt_in_model(entry: ManifestEntry, tmp_path: Path) -> None:
    """The larger models: minutes each; run with --soak."""
    result = run_model(entry, timeout_s=3600, output_dir=tmp_path)
    assert compare_with_manifest(entry, result) == [], result.output_path
