"""`mox tlc`: run a bounded TLA+ model with TLC and say whether it did what it must.

    mox tlc specs/raft/MCRaft.cfg [--workers N] [--simulate --depth D --num N --seed S]
    mox tlc --all-ci [--json FILE]

Exit codes: 0 the result is what the manifest expects (or "ok" for a model not in the
manifest), 1 a violation, an error of the spec or a mismatch with the manifest, 2 bad flags
or paths (the message names them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from checker.tlc import (
    ManifestEntry,
    TlcError,
    TlcResult,
    compare_with_manifest,
    find_manifest,
    load_manifest,
    run_model,
    run_tlc,
)
from mox.errors import MoxError

__all__ = ["ModelCheckFailed", "command", "module_for_cfg"]

# Variables shown in a counterexample table are cut to this many characters per line.
_VALUE_WIDTH_CHARS = 110


class ModelCheckFailed(MoxError):
    """A model was violated, failed, or did not match its manifest entry (exit code 1)."""

    exit_code = 1

    def __init__(self, models: list[str]) -> None:
        self.models = models
        super().__init__("not as expected: " + ", ".join(models))


def module_for_cfg(cfg: Path) -> str:
    """The spec module a cfg belongs to: `X.tla` for `X.cfg`, else the longest `Y.tla` in the
    same folder whose name prefixes the cfg's (MCRaftElection.cfg -> MCRaft.tla)."""
    stem = cfg.stem
    folder = cfg.parent
    candidates = [p.stem for p in folder.glob("*.tla") if stem.startswith(p.stem)]
    if not candidates:
        raise click.BadParameter(
            f"no spec module for {cfg}: expected {stem}.tla or a .tla whose name prefixes it "
            f"in {folder}",
            param_hint="CFG",
        )
    return max(candidates, key=len)


def _entry_for(cfg: Path, entries: list[ManifestEntry]) -> ManifestEntry | None:
    resolved = cfg.resolve()
    for entry in entries:
        if entry.cfg_path.resolve() == resolved:
            return entry
    return None


def _short(value: str) -> str:
    return value if len(value) <= _VALUE_WIDTH_CHARS else value[: _VALUE_WIDTH_CHARS - 3] + "..."


def _print_counterexample(result: TlcResult) -> None:
    """One block per state: the action that led to it and the variables it changed."""
    previous: dict[str, str] = {}
    click.echo("counterexample (variables that changed at each step):")
    for state in result.counterexample:
        where = f"  [{state.location}]" if state.location else ""
        click.echo(f"  state {state.number:>3}  {state.action}{where}")
        for name, value in state.variables.items():
            if previous.get(name) != value:
                click.echo(f"      {name:<16} = {_short(value)}")
        previous = dict(state.variables)


def _summary(name: str, result: TlcResult) -> None:
    def num(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    what = result.outcome + (f" ({result.violated})" if result.violated else "")
    click.echo(
        f"{name}: {what}; states {num(result.states_generated)}, "
        f"distinct {num(result.distinct_states)}, depth {num(result.depth)}, "
        f"{result.duration_s:.1f} s"
    )
    if result.message:
        click.echo(f"  TLC: {result.message}")
    click.echo(f"  output: {result.output_path}")


def _judge(entry: ManifestEntry | None, result: TlcResult, comparable: bool) -> list[str]:
    """Problems with `result`: against the manifest, or any violation when not in it."""
    if entry is None:
        if result.outcome == "ok":
            return []
        return [f"{result.outcome} {result.violated or result.message or ''}".rstrip()]
    problems = compare_with_manifest(entry, result)
    if not comparable:
        # Other options than the manifest's: the state count is not comparable.
        problems = [p for p in problems if "distinct states" not in p]
    return problems


@click.command(name="tlc")
@click.argument(
    "cfg", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--workers", type=click.IntRange(min=1, max=64), default=None,
              help="TLC worker threads (default: the manifest's, else 1).")
@click.option("--simulate", is_flag=True, help="Random simulation instead of exhaustive search.")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="Behaviour length in simulation (-depth).")
@click.option("--num", type=click.IntRange(min=1), default=None,
              help="Number of behaviours to simulate (-simulate num=N).")
@click.option("--seed", type=int, default=None, help="Simulation seed (-seed).")
@click.option("--all-ci", "all_ci", is_flag=True,
              help="Run every model of the manifest marked ci and compare with it.")
@click.option("--manifest", "manifest_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The manifest (default: the nearest specs/manifest.json).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
def command(
    cfg: Path | None,
    workers: int | None,
    simulate: bool,
    depth: int | None,
    num: int | None,
    seed: int | None,
    all_ci: bool,
    manifest_path: Path | None,
    json_path: Path | None,
) -> None:
    """Model-check a TLA+ model (a .cfg) with TLC, or every CI model with --all-ci."""
    if all_ci and cfg is not None:
        raise click.UsageError("give either CFG or --all-ci, not both")
    if not all_ci and cfg is None:
        raise click.UsageError("missing CFG (a model's .cfg file) or --all-ci")
    for flag, value in (("--depth", depth), ("--num", num), ("--seed", seed)):
        if value is not None and not simulate:
            raise click.UsageError(f"{flag} needs --simulate")
    if simulate and all_ci:
        raise click.UsageError("--simulate cannot be combined with --all-ci")
    if simulate and num is None:
        raise click.UsageError("--simulate needs --num N (TLC would otherwise run forever)")

    if cfg is not None and cfg.suffix != ".cfg":
        raise click.BadParameter(f"{cfg} is not a TLC model config (.cfg)", param_hint="CFG")
    if manifest_path is None:
        manifest_path = find_manifest(cfg if cfg is not None else Path.cwd())
    try:
        entries = load_manifest(manifest_path) if manifest_path else []
    except TlcError as exc:
        raise click.BadParameter(str(exc), param_hint="--manifest") from exc

    runs: list[tuple[str, ManifestEntry | None, TlcResult, list[str]]] = []
    if all_ci:
        if manifest_path is None:
            raise click.UsageError("--all-ci needs a manifest: no specs/manifest.json found")
        for ci_entry in (e for e in entries if e.ci):
            result = run_model(ci_entry, workers=workers)
            problems = _judge(ci_entry, result, comparable=True)
            runs.append((ci_entry.name, ci_entry, result, problems))
            _report(ci_entry.name, ci_entry, result, problems, show_trace=False)
    else:
        assert cfg is not None
        entry = _entry_for(cfg, entries)
        module = entry.module if entry else module_for_cfg(cfg)
        manifest_options = entry is not None and not simulate and entry.mode == "exhaustive"
        if entry is not None and entry.mode == "simulate" and not simulate:
            result = run_model(entry, workers=workers)
            manifest_options = True
        else:
            result = run_tlc(
                cfg.parent,
                module,
                cfg.name,
                workers=workers or (entry.workers if entry else 1),
                simulate=simulate,
                depth=depth,
                num=num,
                seed=seed,
                check_deadlock=entry.check_deadlock if entry else False,
            )
        name = entry.name if entry else cfg.stem
        problems = _judge(entry, result, comparable=manifest_options)
        runs.append((name, entry, result, problems))
        _report(name, entry, result, problems, show_trace=True)

    if json_path is not None:
        payload: list[dict[str, Any]] = []
        for name, run_entry, result, problems in runs:
            payload.append(
                {
                    "model": name,
                    "expected": None
                    if run_entry is None
                    else {
                        "result": run_entry.expected_result,
                        "violated": run_entry.expected_violated,
                        "distinct_states": run_entry.expected_distinct_states,
                    },
                    "problems": problems,
                    **result.to_json(),
                }
            )
        try:
            json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot write {json_path}: {exc.strerror}",
                                     param_hint="--json") from exc

    failed = [name for name, _, _, problems in runs if problems]
    if all_ci:
        click.echo(f"{len(runs) - len(failed)} of {len(runs)} CI models as expected")
    if failed:
        # A MoxError, not click's Exit: mox.cli runs click with standalone_mode=False, where
        # an Exit's code would be returned and lost.
        raise ModelCheckFailed(failed)


def _report(
    name: str, entry: ManifestEntry | None, result: TlcResult, problems: list[str], show_trace: bool
) -> None:
    _summary(name, result)
    if entry is not None:
        expected: str = entry.expected_result
        if entry.expected_violated:
            expected += f" ({entry.expected_violated})"
        if entry.expected_distinct_states is not None:
            expected += f", {entry.expected_distinct_states:,} distinct"
        click.echo(f"  expected: {expected}")
    for problem in problems:
        click.echo(f"  MISMATCH: {problem}")
    if not problems:
        click.echo("  as expected" if entry is not None else "  no error")
    if show_trace and result.counterexample:
        _print_counterexample(result)
