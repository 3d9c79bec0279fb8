"""`mox start` (one node of a cluster) and `mox dev` (a local cluster of `mox start` processes).

`mox start --config mox.toml` composes one production node: the validated config, the data
directory (locked, so two processes never share one; the superblock refuses another node's or
cluster's directory), the real IO seam (RealFileSystem, RealClock, RealRandom), the TCP
cluster transport, the node runtime and the aiohttp API on the client port. SIGINT or
SIGTERM stops it cleanly: the API stops accepting, the node finishes the Ready in progress
and closes its files, the transport closes. A `kill -9` is survivable by design: everything
acknowledged was fsynced first, and the next start recovers from the data directory.

`mox dev` reads the embedded `default.toml`, writes one config per node into its data
directory and runs each node as a child `mox start` process, streaming their logs prefixed by
node. Ctrl-C stops them all; running it again resumes from the same directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import importlib.resources
import json
import logging
import os
import secrets
import signal
import sys
import tomllib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

import attrs
import click

from mox.config import MoxConfig, load_config, parse_config
from mox.errors import ConfigError, DataDirError, StorageFaultError

if TYPE_CHECKING:
    from mox.node.runtime import NodeConfig

__all__ = [
    "DEFAULT_LOOP",
    "DEV_CLUSTER_FILE",
    "LOCK_FILE",
    "dev_command",
    "dump_toml",
    "load_default_template",
    "node_config_documents",
    "node_config_from",
    "serve",
    "start_command",
    "with_join",
]

LOCK_FILE = "mox.lock"
DEV_CLUSTER_FILE = "dev-cluster.json"
ADMIN_TOKEN_FILE = "admin-token"
# Ticks per heartbeat: the runtime ticks the core every heartbeat_interval / this.
HEARTBEAT_TICKS = 5
SEND_QUEUE_MAX = 4096
SHUTDOWN_TIMEOUT_S = 5.0
# `mox dev` tells its nodes its pid, so that they stop if it dies without stopping them.
PARENT_PID_ENV = "MOX_DEV_SUPERVISOR_PID"
PARENT_POLL_S = 0.5
CLUSTER_PORT_OFFSET = 100
LOOPS = ("auto", "uvloop", "asyncio")
# uvloop when installed: the transport round trip measured here is 2x faster (143 µs vs 293).
DEFAULT_LOOP = "auto"


# -- configuration -----------------------------------------------------------------------


def node_config_from(config: MoxConfig) -> NodeConfig:
    """The runtime's NodeConfig for this mox.toml (durations turned into ticks).

    One tick is heartbeat_interval / HEARTBEAT_TICKS; election timeouts are rounded to
    whole ticks and kept strictly above the heartbeat, as the runtime requires.
    `storage.cache_size` bounds the LSM block cache (in blocks of the LSM's block size).
    """
    from mox.node.runtime import NodeConfig
    from mox.storage.lsm import LsmOptions

    consensus = config.consensus
    tick_interval_s = consensus.heartbeat_interval_s / HEARTBEAT_TICKS
    election_min_ticks = max(
        HEARTBEAT_TICKS + 1, round(consensus.election_timeout_min_s / tick_interval_s)
    )
    election_max_ticks = max(
        election_min_ticks + 1, round(consensus.election_timeout_max_s / tick_interval_s)
    )
    members = tuple(sorted(node.id for node in config.cluster.nodes))
    block_size_bytes = LsmOptions().block_size_bytes
    lsm_options = LsmOptions(
        block_cache_blocks=max(1, config.storage.cache_size_bytes // block_size_bytes)
    )
    node_config = NodeConfig(
        node_id=config.cluster.node_id,
        members=members,
        cluster_id=config.cluster.cluster_id,
        tick_interval_s=tick_interval_s,
        heartbeat_ticks=HEARTBEAT_TICKS,
        election_timeout_ticks_min=election_min_ticks,
        election_timeout_ticks_max=election_max_ticks,
        snapshot_threshold_entries=config.consensus.snapshot_threshold,
        pre_vote=config.consensus.pre_vote,
        check_quorum=config.consensus.check_quorum,
        max_batch_size=config.limits.max_batch_size,
        max_message_size_bytes=config.limits.max_message_size_bytes,
        wal_segment_size_bytes=config.storage.wal_segment_size_bytes,
        lsm_options=lsm_options,
        join=config.cluster.initial_state == "existing",
    )
    assert HEARTBEAT_TICKS < election_min_ticks < election_max_ticks
    return node_config


def with_join(config: MoxConfig, config_path: str) -> MoxConfig:
    """`mox start --join`: the config with cluster.initial_state = "existing".

    A file that says initial_state = "new" outright contradicts the flag: refused rather
    than one of them silently winning."""
    from mox.config import check_initial_state

    try:
        with open(config_path, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:  # load_config read it a moment ago
        raise ConfigError(config_path, f"cannot read config file: {exc}") from None
    cluster = raw.get("cluster")
    if isinstance(cluster, dict) and cluster.get("initial_state") == "new":
        raise click.UsageError(
            f"--join contradicts cluster.initial_state = \"new\" in {config_path}; "
            "remove one of them"
        )
    check_initial_state("existing", config.cluster.node_id, config.cluster.nodes, "--join")
    cluster_config = attrs.evolve(config.cluster, initial_state="existing")
    return attrs.evolve(config, cluster=cluster_config)


def _check_supported(config: MoxConfig) -> None:
    """Refuse settings this build accepts in the file but cannot honour (never ignore them)."""
    if config.consensus.protocol != "raft":
        raise ConfigError(
            "consensus.protocol",
            f"{config.consensus.protocol!r} is not implemented yet; use 'raft'",
        )
    if not config.storage.fsync:
        raise ConfigError(
            "storage.fsync", "false is not supported: a node acknowledges only fsynced writes"
        )


def _toml_value(value: object, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item, key) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{name} = {_toml_value(v, key)}" for name, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"{key}: cannot write {type(value).__name__} as TOML")


def dump_toml(document: Mapping[str, Any]) -> str:
    """TOML text for a config document: top-level tables of scalars, arrays, inline tables."""
    lines: list[str] = []
    for section, table in document.items():
        assert isinstance(table, dict), f"top-level {section!r} must be a table"
        lines.append(f"[{section}]")
        for name, value in table.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                lines.append(f"{name} = [")
                lines.extend(f"    {_toml_value(item, name)}," for item in value)
                lines.append("]")
            else:
                lines.append(f"{name} = {_toml_value(value, f'{section}.{name}')}")
        lines.append("")
    text = "\n".join(lines)
    assert tomllib.loads(text) == document, "dump_toml must round-trip"
    return text


def load_default_template() -> dict[str, Any]:
    """The embedded default configuration (mox/node/default.toml) as a TOML document."""
    text = importlib.resources.files("mox.node").joinpath("default.toml").read_text("utf-8")
    document = tomllib.loads(text)
    parse_config(copy.deepcopy(document), "mox/node/default.toml")  # must itself be valid
    return document


def node_config_documents(
    template: Mapping[str, Any],
    client_ports: Sequence[int],
    cluster_ports: Sequence[int],
    host: str = "127.0.0.1",
) -> dict[int, dict[str, Any]]:
    """One config document per node (ids 1..n) of a cluster on `host`, from `template`.

    Each node's `storage.data_dir` is "node<i>", which `load_config` resolves beside the file.
    """
    assert len(client_ports) == len(cluster_ports) >= 1
    nodes: list[dict[str, Any]] = [
        {"id": i + 1, "host": host, "client_port": client, "cluster_port": cluster}
        for i, (client, cluster) in enumerate(zip(client_ports, cluster_ports, strict=True))
    ]
    documents: dict[int, dict[str, Any]] = {}
    for node in nodes:
        node_id: int = node["id"]
        document = copy.deepcopy(dict(template))
        document.setdefault("cluster", {})
        document.setdefault("storage", {})
        document.setdefault("api", {})
        document["cluster"]["node_id"] = node_id
        document["cluster"]["nodes"] = copy.deepcopy(nodes)
        document["storage"]["data_dir"] = f"node{node_id}"
        document["api"]["bind_address"] = f"{host}:{node['client_port']}"
        documents[node_id] = document
    return documents


# -- mox start ---------------------------------------------------------------------------


class _StdlibToStructlog(logging.Handler):
    """Sends stdlib `logging` records (e.g. the IO backend choice) to the JSON log."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        method = self._logger.warning if record.levelno >= logging.WARNING else self._logger.info
        method(record.getMessage(), logger=record.name)


def _lock_data_dir(data_dir: str) -> IO[str]:
    """Hold an exclusive lock on the data directory for this process's lifetime."""
    try:
        os.makedirs(data_dir, exist_ok=True)
        handle = open(os.path.join(data_dir, LOCK_FILE), "a+")  # noqa: SIM115 (held open)
    except OSError as exc:
        raise DataDirError(data_dir, f"cannot be created or opened: {exc.strerror}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirError(data_dir, f"is in use by another running node (pid {holder})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


async def serve(
    config: MoxConfig,
    logger: Any,
    *,
    stop: asyncio.Event | None = None,
    admin_token: str | None = None,
    parent_pid: int | None = None,
) -> int:
    """Run one node until `stop` is set (or SIGINT/SIGTERM when `stop` is None).

    Returns the exit code: 0 after a requested stop, 1 if the node stopped on its own (a
    bug), which is logged as `node.failed` with the traceback. Raises StorageFaultError
    (exit code 3, one line naming file and offset) when the node stopped because data on
    its disk failed verification, at recovery or while running (logged as
    `node.storage_fault`). With
    `parent_pid` (set by `mox dev`), the node also stops when that process is gone, so a
    killed supervisor leaves no orphan nodes behind.
    """
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from mox.api import create_app
    from mox.api.app import METRICS
    from mox.api.limits import serve_limited
    from mox.io.real import RealClock, RealFileSystem, RealRandom
    from mox.io.tcp import ListenError, TcpTransport
    from mox.node.runtime import Node

    _check_supported(config)
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    watcher = None
    if parent_pid is not None:
        watcher = asyncio.ensure_future(_watch_parent(parent_pid, stop, logger))
    me = config.cluster.self_address
    data_dir = config.storage.data_dir
    lock = _lock_data_dir(data_dir)
    fs = RealFileSystem(data_dir, backend=config.storage.io_backend)
    rng = RealRandom()
    transport = TcpTransport(
        me.id,
        (me.host, me.cluster_port),
        {n.id: (n.host, n.cluster_port) for n in config.cluster.nodes if n.id != me.id},
        config.limits.max_message_size_bytes,
        SEND_QUEUE_MAX,
        logger,
        cluster_id=config.cluster.cluster_id,
        random=rng,
        max_reassembled_size_bytes=config.limits.max_snapshot_size_bytes,
    )
    node: Node | None = None
    runner: web.AppRunner | None = None
    api_server: asyncio.Server | None = None
    failure: BaseException | None = None
    storage_fault: StorageFaultError | None = None
    try:
        node = await Node.open(
            node_config_from(config),
            fs=fs,
            transport=transport,
            clock=RealClock(),
            rng=rng,
            logger=logger,
        )
        status = node.status()
        logger.info(
            "node.recovered",
            node=me.id,
            term=status.term,
            applied_index=status.applied_index,
            last_index=status.last_index,
            snapshot_index=status.snapshot_index,
            io_backend=fs.backend,
        )
        try:
            await transport.start()
        except ListenError as exc:
            index = [n.id for n in config.cluster.nodes].index(me.id)
            raise ConfigError(
                f"cluster.nodes[{index}].cluster_port",
                f"cannot listen on {exc.host}:{exc.port}: {exc.problem}",
            ) from None
        run_task = node.start()
        registry = CollectorRegistry()
        transport.register_metrics(registry)
        app = create_app(node, config, registry, logger, admin_token=admin_token)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        host, port = config.api.host, config.api.port
        metrics = app[METRICS]
        try:
            api_server = await serve_limited(
                runner,
                host,
                port,
                config.api.max_connections,
                on_refused=metrics.connections_refused.inc,
            )
        except OSError as exc:
            raise ConfigError(
                "api.bind_address", f"cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        logger.info(
            "node.started",
            node=me.id,
            api=f"http://{host}:{port}",
            cluster=f"{me.host}:{me.cluster_port}",
            cluster_id=config.cluster.cluster_id,
            event_loop=type(loop).__module__.split(".")[0],
        )
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({stopped, run_task}, return_when=asyncio.FIRST_COMPLETED)
        if node.storage_fault is not None:
            # Fail-stop on damaged data (already logged as node.storage_fault by the node).
            stopped.cancel()
            storage_fault = node.storage_fault
        elif run_task in done:
            stopped.cancel()
            failure = run_task.exception() or RuntimeError("the run task ended by itself")
            logger.error("node.failed", node=me.id, exc_info=failure)
        else:
            logger.info("node.stopping", node=me.id)
    finally:
        if watcher is not None:
            watcher.cancel()
        if api_server is not None:
            api_server.close()
            await api_server.wait_closed()
        if runner is not None:
            await runner.cleanup()
        if node is None:
            await transport.close()
        else:
            try:
                await node.stop()
            except Exception:
                if failure is None:
                    raise
                # Already reported as node.failed: stop() re-raises the run task's error.
                await transport.close()
        fs.close()
        lock.close()
    logger.info(
        "node.stopped",
        node=me.id,
        failed=failure is not None or storage_fault is not None,
        storage_fault=storage_fault is not None,
    )
    if storage_fault is not None:
        raise storage_fault
    return 0 if failure is None else 1


async def _watch_parent(parent_pid: int, stop: asyncio.Event, logger: Any) -> None:
    """Set `stop` once this process is re-parented (its parent died, even by SIGKILL)."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_POLL_S)
    # Our stdout/stderr were pipes to the dead supervisor: every log line would now fail
    # with EPIPE. Point them at /dev/null so the clean stop below can log as usual.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    stop.set()
    logger.warning("node.parent_gone", parent_pid=parent_pid)


def _event_loop_factory(name: str) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise click.UsageError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop, "uvloop"
    return asyncio.new_event_loop, "asyncio"


def _run(main: Coroutine[Any, Any, int], loop_name: str) -> int:
    factory, _ = _event_loop_factory(loop_name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


@click.command("start")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The node's mox.toml.",
)
@click.option(
    "--loop",
    "loop_name",
    type=click.Choice(LOOPS),
    default=DEFAULT_LOOP,
    show_default=True,
    help="Event loop: auto (uvloop when installed), uvloop, or asyncio.",
)
@click.option(
    "--join",
    is_flag=True,
    default=False,
    help="Join a running cluster: cluster.initial_state = \"existing\". An empty data "
    "directory then starts a member of nothing until a leader adds this node; a node with "
    "data ignores it.",
)
def start_command(config_path: str, loop_name: str, join: bool) -> None:
    """Run one node of a cluster (API, cluster transport, storage) until SIGINT/SIGTERM."""
    from mox.api import make_logger

    config = load_config(config_path)
    if join:
        config = with_join(config, config_path)
    _check_supported(config)
    logger = make_logger(sys.stderr, node=config.cluster.node_id)
    handler = _StdlibToStructlog(logger)
    logging.getLogger("mox").addHandler(handler)
    logging.getLogger("mox").setLevel(logging.INFO)
    parent = os.environ.get(PARENT_PID_ENV, "")
    parent_pid = int(parent) if parent.isdigit() else None
    code = _run(serve(config, logger, parent_pid=parent_pid), loop_name)
    if code:
        sys.exit(code)


# -- mox dev -----------------------------------------------------------------------------


def _dev_layout(data_dir: Path, nodes: int) -> None:
    """Record the cluster's size; refuse to resume a directory made for another size."""
    marker = data_dir / DEV_CLUSTER_FILE
    if marker.exists():
        try:
            recorded = json.loads(marker.read_text())
            recorded_nodes = int(recorded["nodes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataDirError(str(data_dir), f"{DEV_CLUSTER_FILE} is unreadable: {exc}") from None
        if recorded_nodes != nodes:
            raise click.UsageError(
                f"--nodes {nodes}: {data_dir} holds a {recorded_nodes}-node dev cluster; "
                f"run with --nodes {recorded_nodes} or use another --data-dir"
            )
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"nodes": nodes}) + "\n")


def _admin_token(data_dir: Path) -> tuple[str, str]:
    """(token, where it is): MOX_ADMIN_TOKEN if set, else the dev cluster's own token,
    made once and kept in the data directory (mode 0600)."""
    from_env = os.environ.get("MOX_ADMIN_TOKEN")
    if from_env:
        return from_env, "MOX_ADMIN_TOKEN"
    path = data_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip(), str(path)


async def _pump(prefix: str, stream: asyncio.StreamReader, out: TextIO) -> None:
    while line := await stream.readline():
        out.write(prefix + line.decode("utf-8", "replace").rstrip("\n") + "\n")
        out.flush()


async def _wait_healthy(
    url: str, process: asyncio.subprocess.Process, timeout_s: float, stop: asyncio.Event
) -> bool:
    """True once `url` answers /health; False if the node exits, time runs out or we stop."""
    import aiohttp

    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while (
            asyncio.get_running_loop().time() < deadline
            and process.returncode is None
            and not stop.is_set()
        ):
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"{url}/health") as response:
                    if response.status == 200:
                        return True
            await asyncio.sleep(0.1)
    return False


async def _terminate(processes: Sequence[asyncio.subprocess.Process], timeout_s: float) -> None:
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    waits = [asyncio.ensure_future(process.wait()) for process in processes]
    _, pending = await asyncio.wait(waits, timeout=timeout_s) if waits else (set(), set())
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def _dev(data_dir: Path, nodes: int, base_port: int, loop_name: str) -> int:
    template = load_default_template()
    client_ports = [base_port + i for i in range(nodes)]
    cluster_ports = [base_port + CLUSTER_PORT_OFFSET + i for i in range(nodes)]
    documents = node_config_documents(template, client_ports, cluster_ports)
    _dev_layout(data_dir, nodes)
    token, token_source = _admin_token(data_dir)
    paths: dict[int, Path] = {}
    for node_id, document in documents.items():
        path = data_dir / f"node{node_id}.toml"
        path.write_text(
            "# Written by `mox dev` from the embedded default; rewritten on every run.\n"
            + dump_toml(document)
        )
        load_config(path)  # validated here: a bad template fails before any child starts
        paths[node_id] = path
    env = {
        **os.environ,
        "MOX_ADMIN_TOKEN": token,
        "PYTHONUNBUFFERED": "1",
        PARENT_PID_ENV: str(os.getpid()),
    }
    width = len(f"node{nodes}")
    processes: dict[int, asyncio.subprocess.Process] = {}
    pumps: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    click.echo(
        f"mox dev: {nodes} nodes, data in {data_dir}, "
        f"admin token for POST /api/tenants in {token_source}"
    )
    try:
        for node_id, path in paths.items():
            # Own session: a terminal's Ctrl-C reaches only this supervisor, which then
            # stops the nodes in order instead of racing them.
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mox.cli", "start", "--config", str(path),
                "--loop", loop_name,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )  # fmt: skip
            processes[node_id] = process
            assert process.stdout is not None
            prefix = f"{f'node{node_id}':<{width}} | "
            pumps.append(asyncio.create_task(_pump(prefix, process.stdout, sys.stdout)))
        for node_id, process in processes.items():
            url = f"http://127.0.0.1:{client_ports[node_id - 1]}"
            if await _wait_healthy(url, process, timeout_s=30, stop=stop):
                click.echo(f"node {node_id}: {url}  (cluster port {cluster_ports[node_id - 1]})")
            elif stop.is_set():
                break
            else:
                click.echo(f"node {node_id}: did not become healthy at {url}", err=True)
        if not stop.is_set():
            click.echo("mox dev: running; Ctrl-C stops the cluster")
        waits = {asyncio.ensure_future(p.wait()): node_id for node_id, p in processes.items()}
        stopped = asyncio.ensure_future(stop.wait())
        pending: set[asyncio.Future[Any]] = {stopped, *waits}
        while not stop.is_set():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                if future in waits:
                    node_id = waits[future]
                    click.echo(f"mox dev: node {node_id} exited with code {future.result()}")
            if all(p.returncode is not None for p in processes.values()):
                click.echo("mox dev: every node has exited", err=True)
                return 1
        click.echo("mox dev: stopping")
        return 0
    finally:
        await _terminate(list(processes.values()), timeout_s=SHUTDOWN_TIMEOUT_S * 2)
        await asyncio.gather(*pumps, return_exceptions=True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        click.echo("mox dev: stopped")


@click.command("dev")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="mox-data",
    show_default=True,
    help="Where the nodes' configs and data live; running again resumes from it.",
)
@click.option(
    "--nodes", type=click.IntRange(1, 9), default=3, show_default=True, help="Cluster size."
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65535 - CLUSTER_PORT_OFFSET - 9),
    default=8080,
    show_default=True,
    help=f"Node i serves its API on base+i-1 and cluster traffic on base+{CLUSTER_PORT_OFFSET}+i-1.",
)
@click.option(
    "--loop",
    "loop_name",
    type=click.Choice(LOOPS),
    default=DEFAULT_LOOP,
    show_default=True,
    help="Event loop of the nodes.",
)
def dev_command(data_dir: str, nodes: int, base_port: int, loop_name: str) -> None:
    """Run a local cluster on 127.0.0.1 from the embedded default config (Ctrl-C stops it)."""
    code = asyncio.run(_dev(Path(data_dir).absolute(), nodes, base_port, loop_name))
    if code:
        sys.exit(code)
