"""mox.toml parsing: the RFC example loads; every bad value names its key."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mox.config import load_config, parse_config
from mox.errors import ConfigError
from mox.units import parse_duration_s, parse_size_bytes

RFC_EXAMPLE = """
[cluster]
node_id = 1
nodes = [
    { id = 1, host = "node1.mox.local", client_port = 8080, cluster_port = 9000 },
    { id = 2, host = "node2.mox.local", client_port = 8080, cluster_port = 9000 },
    { id = 3, host = "node3.mox.local", client_port = 8080, cluster_port = 9000 },
]

[storage]
data_dir = "/var/lib/mox"
wal_segment_size = "64MB"
cache_size = "1GB"
fsync = true

[consensus]
election_timeout_min = "150ms"
election_timeout_max = "300ms"
heartbeat_interval = "50ms"
snapshot_threshold = 100000  # entries before snapshot

[api]
bind_address = "0.0.0.0:8080"
max_connections = 10000
request_timeout = "30s"

[limits]
max_batch_size = 1000
max_message_size = "16MB"
max_tenants = 10000
max_events_per_second = 100000
"""

MINIMAL: dict[str, Any] = {
    "cluster": {
        "node_id": 2,
        "cluster_id": "dev-1",
        "nodes": [
            {"id": 1, "host": "127.0.0.1", "client_port": 8081, "cluster_port": 9001},
            {"id": 2, "host": "127.0.0.1", "client_port": 8082, "cluster_port": 9002},
        ],
    }
}


def test_rfc_example_loads(tmp_path: Any) -> None:
    path = tmp_path / "mox.toml"
    path.write_text(RFC_EXAMPLE)
    config = load_config(path)
    assert config.cluster.node_id == 1
    assert [n.id for n in config.cluster.nodes] == [1, 2, 3]
    assert config.cluster.self_address.host == "node1.mox.local"
    assert config.storage.wal_segment_size_bytes == 64_000_000
    assert config.storage.cache_size_bytes == 1_000_000_000
    assert config.storage.data_dir == "/var/lib/mox"
    assert config.consensus.election_timeout_min_s == pytest.approx(0.150)
    assert config.consensus.heartbeat_interval_s == pytest.approx(0.050)
    assert config.api.request_timeout_s == 30.0
    assert (config.api.host, config.api.port) == ("0.0.0.0", 8080)
    assert config.limits.max_message_size_bytes == 16_000_000
    assert config.source == str(path)


def test_defaults_and_relative_data_dir(tmp_path: Any) -> None:
    config = parse_config(copy.deepcopy(MINIMAL), "test")
    assert config.cluster.cluster_id == "dev-1"
    assert config.storage.io_backend == "auto"
    assert config.consensus.protocol == "raft"
    assert config.consensus.pre_vote and config.consensus.check_quorum
    assert config.api.bind_address == "127.0.0.1:8080"
    path = tmp_path / "sub" / "mox.toml"
    path.parent.mkdir()
    path.write_text(
        '[cluster]\nnode_id = 1\nnodes = [{id = 1, host = "h", client_port = 1, cluster_port = 2}]\n'
        '[storage]\ndata_dir = "node1"\n'
    )
    assert load_config(path).storage.data_dir == str(tmp_path / "sub" / "node1")


def with_value(section: str, key: str, value: object) -> dict[str, Any]:
    raw = copy.deepcopy(MINIMAL)
    raw.setdefault(section, {})[key] = value
    return raw


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("storage", "wal_segment_size", "1KB", "must be between"),
        ("storage", "wal_segment_size", "64 parsecs", "unknown size unit"),
        ("storage", "wal_segment_size", 65537, "multiple of 4096"),
        ("storage", "wal_segment_size", True, "expected a size"),
        ("storage", "cache_size", [1], "expected a size"),
        ("storage", "fsync", "yes", "expected true or false"),
        ("storage", "direct_io", True, "not supported"),
        ("storage", "io_backend", "aio", "must be one of auto, io_uring, pwrite"),
        ("storage", "data_dir", "", "must not be empty"),
        ("consensus", "protocol", "paxos", "must be one of raft, vsr"),
        ("consensus", "election_timeout_min", 150, "expected a duration"),
        ("consensus", "election_timeout_min", "150", "needs a unit"),
        ("consensus", "election_timeout_max", "2d", "unknown duration unit"),
        ("consensus", "heartbeat_interval", "0ms", "must be between"),
        ("consensus", "snapshot_threshold", 0, "must be in [1,"),
        ("consensus", "snapshot_threshold", 1.5, "expected an integer"),
        ("consensus", "pre_vote", "on", "expected true or false"),
        ("consensus", "check_quorum", 1, "expected true or false"),
        ("api", "bind_address", "localhost", "expected 'host:port'"),
        ("api", "bind_address", "h:99999", "port must be in"),
        ("api", "max_connections", 0, "must be in [1,"),
        ("api", "request_timeout", "-1s", "cannot parse duration"),
        ("limits", "max_batch_size", "1000", "expected an integer"),
        ("limits", "max_message_size", "1KB", "must be between"),
        ("limits", "max_snapshot_size", "128GiB", "must be between"),
        ("limits", "max_snapshot_size", "1MB", "must be at least limits.max_message_size"),
        ("limits", "max_tenants", 10**8, "must be in"),
        ("limits", "max_events_per_second", False, "expected an integer"),
        ("storage", "wal_segmnet_size", "64MB", "unknown key"),
    ],
)
def test_bad_values_name_their_key(section: str, key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_value(section, key, value), "test")
    assert info.value.key == f"{section}.{key}"
    assert problem in info.value.problem
    assert f"{section}.{key}" in str(info.value)


def test_cross_checks() -> None:
    raw = with_value("consensus", "election_timeout_min", "300ms")
    raw["consensus"]["election_timeout_max"] = "300ms"
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.key == "consensus.election_timeout_max"

    raw = with_value("consensus", "heartbeat_interval", "150ms")
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.key == "consensus.heartbeat_interval"

    raw = copy.deepcopy(MINIMAL)
    raw["cluster"]["node_id"] = 7
    with pytest.raises(ConfigError, match=r"7 is not among cluster\.nodes") as info:
        parse_config(raw)
    assert info.value.key == "cluster.node_id"

    raw = copy.deepcopy(MINIMAL)
    raw["cluster"]["nodes"][1]["id"] = 1
    raw["cluster"]["node_id"] = 1
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.key == "cluster.nodes[1].id"

    raw = copy.deepcopy(MINIMAL)
    raw["cluster"]["nodes"][1]["cluster_port"] = 8081
    with pytest.raises(ConfigError, match=r"also used by cluster\.nodes\[0\]\.client_port") as info:
        parse_config(raw)
    assert info.value.key == "cluster.nodes[1].cluster_port"


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda r: r.pop("cluster"), "cluster"),
        (lambda r: r["cluster"].pop("nodes"), "cluster.nodes"),
        (lambda r: r["cluster"]["nodes"][0].pop("host"), "cluster.nodes[0].host"),
        (lambda r: r["cluster"]["nodes"][0].update(weight=3), "cluster.nodes[0].weight"),
        (lambda r: r["cluster"]["nodes"][1].update(client_port=0), "cluster.nodes[1].client_port"),
        (lambda r: r["cluster"].update(nodes=[]), "cluster.nodes"),
        (lambda r: r["cluster"].update(cluster_id="has space"), "cluster.cluster_id"),
        (lambda r: r.update(storage="fast"), "storage"),
        (lambda r: r.update(extras={}), "extras"),
    ],
)
def test_structure_errors_name_their_key(mutate: Any, key: str) -> None:
    raw = copy.deepcopy(MINIMAL)
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.key == key


def test_file_errors_name_the_file(tmp_path: Any) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_config(missing)
    assert info.value.key == str(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[cluster\nnode_id = 1")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(broken)
    assert info.value.key == str(broken)


def test_units() -> None:
    assert parse_size_bytes("64MB", "k") == 64_000_000
    assert parse_size_bytes("16MiB", "k") == 16 * 1024 * 1024
    assert parse_size_bytes("512KB", "k") == 512_000
    assert parse_size_bytes("4096", "k") == 4096
    assert parse_size_bytes(4096, "k") == 4096
    assert parse_size_bytes("1.5KiB", "k") == 1536
    assert parse_duration_s("150ms", "k") == pytest.approx(0.15)
    assert parse_duration_s("30s", "k") == 30.0
    assert parse_duration_s("2m", "k") == 120.0
    assert parse_duration_s("500us", "k") == pytest.approx(0.0005)
    with pytest.raises(ConfigError, match="not a whole number of bytes"):
        parse_size_bytes("1.0001KB", "k")
    with pytest.raises(ConfigError, match="must not be negative"):
        parse_size_bytes(-1, "storage.cache_size")


def test_raft_extensions_reach_the_node_config() -> None:
    from mox.node.cli import node_config_from

    raw = copy.deepcopy(MINIMAL)
    raw.setdefault("consensus", {}).update({"pre_vote": False, "check_quorum": False})
    node_config = node_config_from(parse_config(raw, "test"))
    assert node_config.pre_vote is False
    assert node_config.check_quorum is False
    assert node_config_from(parse_config(copy.deepcopy(MINIMAL), "test")).pre_vote is True


def test_initial_state_new_by_default_existing_joins() -> None:
    from mox.node.cli import node_config_from

    config = parse_config(copy.deepcopy(MINIMAL), "test")
    assert config.cluster.initial_state == "new"
    assert node_config_from(config).join is False
    raw = copy.deepcopy(MINIMAL)
    raw["cluster"]["initial_state"] = "existing"
    joining = parse_config(raw, "test")
    assert joining.cluster.initial_state == "existing"
    node_config = node_config_from(joining)
    assert node_config.join is True
    assert node_config.new_directory_members() == (1,)


@pytest.mark.parametrize(
    ("value", "problem"),
    [("exisiting", "must be one of new, existing"), (True, "must be one of new, existing")],
)
def test_initial_state_bad_values_name_the_key(value: object, problem: str) -> None:
    raw = copy.deepcopy(MINIMAL)
    raw["cluster"]["initial_state"] = value
    with pytest.raises(ConfigError, match=problem) as info:
        parse_config(raw, "test")
    assert info.value.key == "cluster.initial_state"


def test_initial_state_existing_needs_someone_to_join() -> None:
    raw = copy.deepcopy(MINIMAL)
    raw["cluster"]["nodes"] = raw["cluster"]["nodes"][1:]
    raw["cluster"]["initial_state"] = "existing"
    with pytest.raises(ConfigError, match="lists only this node") as info:
        parse_config(raw, "test")
    assert info.value.key == "cluster.initial_state"
