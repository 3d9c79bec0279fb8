"""mox.toml: parsed into frozen attrs classes, every key type- and range-checked.

Unknown keys are errors (a typo must not silently fall back to a default). Each error is a
ConfigError naming the full key, e.g. `storage.wal_segment_size` or
`cluster.nodes[2].cluster_port`. Attribute names carry units (`wal_segment_size_bytes`,
`election_timeout_min_s`); the TOML keys are the RFC's. docs/configuration.md lists them all.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from mox.errors import ConfigError
from mox.units import parse_duration_s, parse_size_bytes

__all__ = [
    "ApiConfig",
    "ClusterConfig",
    "ConsensusConfig",
    "LimitsConfig",
    "MoxConfig",
    "NodeAddress",
    "StorageConfig",
    "check_initial_state",
    "load_config",
    "parse_config",
]

IO_BACKENDS = ("auto", "io_uring", "pwrite")
PROTOCOLS = ("raft", "vsr")
# cluster.initial_state: "new" bootstraps a cluster (an empty node starts as a member of
# cluster.nodes); "existing" joins one (an empty node starts a member of nothing and waits
# for a leader that added it). Only an empty data directory reads it (docs/operations.md).
INITIAL_STATES = ("new", "existing")
KiB = 1024
MiB = 1024**2
GiB = 1024**3


@attrs.frozen
class NodeAddress:
    id: int
    host: str
    client_port: int
    cluster_port: int


@attrs.frozen
class ClusterConfig:
    node_id: int
    nodes: tuple[NodeAddress, ...]
    cluster_id: str = "mox"
    initial_state: str = "new"

    def node(self, node_id: int) -> NodeAddress:
        for address in self.nodes:
            if address.id == node_id:
                return address
        raise KeyError(node_id)

    @property
    def self_address(self) -> NodeAddress:
        return self.node(self.node_id)


@attrs.frozen
class StorageConfig:
    data_dir: str = "data"
    wal_segment_size_bytes: int = 64 * 1000**2
    cache_size_bytes: int = 1000**3
    fsync: bool = True
    direct_io: bool = False
    io_backend: str = "auto"


@attrs.frozen
class ConsensusConfig:
    protocol: str = "raft"
    election_timeout_min_s: float = 0.150
    election_timeout_max_s: float = 0.300
    heartbeat_interval_s: float = 0.050
    snapshot_threshold: int = 100_000
    pre_vote: bool = True
    check_quorum: bool = True


@attrs.frozen
class ApiConfig:
    bind_address: str = "127.0.0.1:8080"
    max_connections: int = 10_000
    request_timeout_s: float = 30.0

    @property
    def host(self) -> str:
        return split_host_port(self.bind_address, "api.bind_address")[0]

    @property
    def port(self) -> int:
        return split_host_port(self.bind_address, "api.bind_address")[1]


@attrs.frozen
class LimitsConfig:
    max_batch_size: int = 1000
    max_message_size_bytes: int = 16 * 1000**2
    # the largest message (a snapshot) the cluster transport reassembles from frames
    max_snapshot_size_bytes: int = GiB
    max_tenants: int = 10_000
    max_events_per_second: int = 100_000


@attrs.frozen
class MoxConfig:
    cluster: ClusterConfig
    storage: StorageConfig = StorageConfig()
    consensus: ConsensusConfig = ConsensusConfig()
    api: ApiConfig = ApiConfig()
    limits: LimitsConfig = LimitsConfig()
    source: str = "<dict>"


# -- reading helpers ---------------------------------------------------------------------

T = TypeVar("T")


class _Table:
    """One TOML table being read: takes keys out, then rejects whatever is left."""

    def __init__(self, raw: object, key: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(key, f"expected a table, got {type(raw).__name__}")
        self._raw: dict[str, Any] = dict(raw)
        self._key = key

    def full(self, name: str) -> str:
        return f"{self._key}.{name}" if self._key else name

    def take(self, name: str, default: T, parse: Callable[[object, str], T]) -> T:
        if name not in self._raw:
            return default
        return parse(self._raw.pop(name), self.full(name))

    def require(self, name: str, parse: Callable[[object, str], T]) -> T:
        if name not in self._raw:
            raise ConfigError(self.full(name), "is required")
        return parse(self._raw.pop(name), self.full(name))

    def finish(self) -> None:
        for name in sorted(self._raw):
            raise ConfigError(self.full(name), "unknown key")


def _int_in(lo: int, hi: int) -> Callable[[object, str], int]:
    def parse(value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(key, f"must be in [{lo}, {hi}], got {value}")
        return value

    return parse


def _size_in(lo: int, hi: int, multiple_of: int = 1) -> Callable[[object, str], int]:
    def parse(value: object, key: str) -> int:
        size = parse_size_bytes(value, key)
        if not lo <= size <= hi:
            raise ConfigError(key, f"must be between {lo} and {hi} bytes, got {size}")
        if size % multiple_of:
            raise ConfigError(key, f"must be a multiple of {multiple_of} bytes, got {size}")
        return size

    return parse


def _duration_in(lo_s: float, hi_s: float) -> Callable[[object, str], float]:
    def parse(value: object, key: str) -> float:
        duration_s = parse_duration_s(value, key)
        if not lo_s <= duration_s <= hi_s:
            raise ConfigError(key, f"must be between {lo_s:g}s and {hi_s:g}s, got {value!r}")
        return duration_s

    return parse


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(value: object, key: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise ConfigError(key, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    return parse


def _string(max_length: int) -> Callable[[object, str], str]:
    def parse(value: object, key: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        if not value.strip():
            raise ConfigError(key, "must not be empty")
        if len(value) > max_length:
            raise ConfigError(key, f"must be at most {max_length} characters, got {len(value)}")
        return value

    return parse


def _cluster_id(value: object, key: str) -> str:
    text = _string(64)(value, key)
    if not all(c.isalnum() or c in "-_." for c in text) or not text.isascii():
        raise ConfigError(
            key, f"may hold only ASCII letters, digits, '-', '_' and '.', got {text!r}"
        )
    return text


def split_host_port(value: str, key: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; ConfigError naming `key` if malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(key, f"expected 'host:port', got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port must be in [0, 65535], got {port}")
    return host, port


def _bind_address(value: object, key: str) -> str:
    text = _string(300)(value, key)
    split_host_port(text, key)
    return text


_PORT = _int_in(1, 65535)
_NODE_ID = _int_in(1, 2**31 - 1)


def _node(value: object, key: str) -> NodeAddress:
    table = _Table(value, key)
    node = NodeAddress(
        id=table.require("id", _NODE_ID),
        host=table.require("host", _string(253)),
        client_port=table.require("client_port", _PORT),
        cluster_port=table.require("cluster_port", _PORT),
    )
    table.finish()
    return node


def _nodes(value: object, key: str) -> tuple[NodeAddress, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected an array of node tables, got {type(value).__name__}")
    if not 1 <= len(value) <= 64:
        raise ConfigError(key, f"must list between 1 and 64 nodes, got {len(value)}")
    nodes = tuple(_node(item, f"{key}[{index}]") for index, item in enumerate(value))
    seen_ids: dict[int, int] = {}
    seen_endpoints: dict[tuple[str, int], str] = {}
    for index, node in enumerate(nodes):
        if node.id in seen_ids:
            raise ConfigError(
                f"{key}[{index}].id",
                f"node id {node.id} is also used by {key}[{seen_ids[node.id]}]",
            )
        seen_ids[node.id] = index
        for port_name, port in (
            ("client_port", node.client_port),
            ("cluster_port", node.cluster_port),
        ):
            endpoint = (node.host, port)
            if endpoint in seen_endpoints:
                raise ConfigError(
                    f"{key}[{index}].{port_name}",
                    f"{node.host}:{port} is also used by {seen_endpoints[endpoint]}",
                )
            seen_endpoints[endpoint] = f"{key}[{index}].{port_name}"
    return nodes


# -- sections ----------------------------------------------------------------------------


def _parse_cluster(raw: object) -> ClusterConfig:
    table = _Table(raw, "cluster")
    node_id = table.require("node_id", _NODE_ID)
    nodes = table.require("nodes", _nodes)
    cluster_id = table.take("cluster_id", "mox", _cluster_id)
    initial_state = table.take("initial_state", "new", _choice(INITIAL_STATES))
    table.finish()
    if all(node.id != node_id for node in nodes):
        ids = ", ".join(str(node.id) for node in nodes)
        raise ConfigError("cluster.node_id", f"{node_id} is not among cluster.nodes (ids {ids})")
    check_initial_state(initial_state, node_id, nodes, "cluster.initial_state")
    return ClusterConfig(
        node_id=node_id, nodes=nodes, cluster_id=cluster_id, initial_state=initial_state
    )


def check_initial_state(
    initial_state: str, node_id: int, nodes: tuple[NodeAddress, ...], key: str
) -> None:
    """Refuse a join with nobody to join: the node would wait forever for a leader."""
    assert initial_state in INITIAL_STATES, initial_state
    if initial_state == "existing" and all(node.id == node_id for node in nodes):
        raise ConfigError(
            key,
            "'existing' (join a running cluster) needs the addresses of its members in "
            f"cluster.nodes, which lists only this node ({node_id}); a one-node cluster "
            "starts with 'new'",
        )


def _parse_storage(raw: object) -> StorageConfig:
    table = _Table(raw, "storage")
    config = StorageConfig(
        data_dir=table.take("data_dir", "data", _string(4096)),
        wal_segment_size_bytes=table.take(
            "wal_segment_size", 64 * 1000**2, _size_in(64 * KiB, 4 * GiB, 4096)
        ),
        cache_size_bytes=table.take("cache_size", 1000**3, _size_in(MiB, 2**40)),
        fsync=table.take("fsync", True, _bool),
        direct_io=table.take("direct_io", False, _bool),
        io_backend=table.take("io_backend", "auto", _choice(IO_BACKENDS)),
    )
    table.finish()
    if config.direct_io:
        # Honest refusal: the WAL writes through the page cache; O_DIRECT is not implemented.
        raise ConfigError("storage.direct_io", "true is not supported yet; set false")
    return config


def _parse_consensus(raw: object) -> ConsensusConfig:
    table = _Table(raw, "consensus")
    timeout = _duration_in(0.001, 60.0)
    config = ConsensusConfig(
        protocol=table.take("protocol", "raft", _choice(PROTOCOLS)),
        election_timeout_min_s=table.take("election_timeout_min", 0.150, timeout),
        election_timeout_max_s=table.take("election_timeout_max", 0.300, timeout),
        heartbeat_interval_s=table.take("heartbeat_interval", 0.050, timeout),
        snapshot_threshold=table.take("snapshot_threshold", 100_000, _int_in(1, 2**40)),
        pre_vote=table.take("pre_vote", True, _bool),
        check_quorum=table.take("check_quorum", True, _bool),
    )
    table.finish()
    if config.election_timeout_min_s >= config.election_timeout_max_s:
        raise ConfigError(
            "consensus.election_timeout_max",
            f"must be greater than election_timeout_min ({config.election_timeout_min_s:g}s), "
            f"got {config.election_timeout_max_s:g}s",
        )
    if config.heartbeat_interval_s >= config.election_timeout_min_s:
        raise ConfigError(
            "consensus.heartbeat_interval",
            f"must be less than election_timeout_min ({config.election_timeout_min_s:g}s), "
            f"got {config.heartbeat_interval_s:g}s",
        )
    return config


def _parse_api(raw: object) -> ApiConfig:
    table = _Table(raw, "api")
    config = ApiConfig(
        bind_address=table.take("bind_address", "127.0.0.1:8080", _bind_address),
        max_connections=table.take("max_connections", 10_000, _int_in(1, 1_000_000)),
        request_timeout_s=table.take("request_timeout", 30.0, _duration_in(0.001, 3600.0)),
    )
    table.finish()
    return config


def _parse_limits(raw: object) -> LimitsConfig:
    table = _Table(raw, "limits")
    config = LimitsConfig(
        max_batch_size=table.take("max_batch_size", 1000, _int_in(1, 1_000_000)),
        max_message_size_bytes=table.take("max_message_size", 16 * 1000**2, _size_in(4 * KiB, GiB)),
        max_snapshot_size_bytes=table.take("max_snapshot_size", GiB, _size_in(4 * KiB, 64 * GiB)),
        max_tenants=table.take("max_tenants", 10_000, _int_in(1, 10_000_000)),
        max_events_per_second=table.take("max_events_per_second", 100_000, _int_in(1, 10**9)),
    )
    table.finish()
    if config.max_snapshot_size_bytes < config.max_message_size_bytes:
        raise ConfigError(
            "limits.max_snapshot_size",
            f"must be at least limits.max_message_size ({config.max_message_size_bytes} bytes),"
            f" got {config.max_snapshot_size_bytes}",
        )
    return config


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> MoxConfig:
    """Validate a parsed TOML document. `source` names where it came from (for messages)."""
    top = _Table(raw, "")
    cluster = top.require("cluster", lambda value, _key: _parse_cluster(value))
    config = MoxConfig(
        cluster=cluster,
        storage=top.take("storage", StorageConfig(), lambda v, _k: _parse_storage(v)),
        consensus=top.take("consensus", ConsensusConfig(), lambda v, _k: _parse_consensus(v)),
        api=top.take("api", ApiConfig(), lambda v, _k: _parse_api(v)),
        limits=top.take("limits", LimitsConfig(), lambda v, _k: _parse_limits(v)),
        source=source,
    )
    top.finish()
    return config


def load_config(path: str | os.PathLike[str]) -> MoxConfig:
    """Read and validate a mox.toml. A relative `storage.data_dir` is taken relative to the
    directory of the file. Raises ConfigError naming the key (or the file, if unreadable)."""
    text_path = os.fspath(path)
    try:
        with open(text_path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(text_path, f"cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(text_path, f"not valid TOML: {exc}") from None
    config = parse_config(raw, text_path)
    data_dir = config.storage.data_dir
    if not os.path.isabs(data_dir):
        base = os.path.dirname(os.path.abspath(text_path))
        storage = attrs.evolve(
            config.storage, data_dir=os.path.normpath(os.path.join(base, data_dir))
        )
        config = attrs.evolve(config, storage=storage)
    return config
