"""Support for the API and client tests (no tests here): real Mox nodes serving the REST API.

Each node is the real runtime (WAL, superblock, LSM on real files in a tmp dir), a real
TCP transport between nodes, and the aiohttp app on a real TCP port.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from mox.api import create_app, make_logger
from mox.config import MoxConfig, parse_config
from mox.io.ports import free_ports
from mox.io.real import RealClock, RealFileSystem, RealRandom
from mox.io.tcp import TcpTransport
from mox.node.runtime import Node, NodeConfig

ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    """A free port below the ephemeral range (see test_cluster_support.free_ports)."""
    return free_ports(1)[0]


class RunningNode:
    def __init__(
        self,
        node: Node,
        runner: web.AppRunner,
        url: str,
        logs: io.StringIO,
        registry: CollectorRegistry,
        transport: TcpTransport,
    ) -> None:
        self.node = node
        self.runner = runner
        self.url = url
        self.logs = logs
        self.registry = registry
        self.transport = transport

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.node.stop()

    async def power_cut(self) -> None:
        """Die as a process would: nothing more written, every socket gone.

        Node.crash() stops the node at once but leaves a TcpTransport running (it has no
        close_now), so its sockets are closed here as the kernel would close them.
        """
        self.node.crash()
        await self.runner.cleanup()
        await self.transport.close()


class Cluster:
    """`size` nodes with their API servers; `await cluster.start()`, `await cluster.stop()`."""

    def __init__(self, root: Path, size: int = 1) -> None:
        self.root = root
        self.size = size
        ids = list(range(1, size + 1))
        ports = free_ports(2 * size)
        self.client_ports = {i: ports[i - 1] for i in ids}
        self.cluster_ports = {i: ports[size + i - 1] for i in ids}
        self.nodes: dict[int, RunningNode] = {}

    def config(self, node_id: int) -> MoxConfig:
        nodes = [
            {
                "id": i,
                "host": "127.0.0.1",
                "client_port": self.client_ports[i],
                "cluster_port": self.cluster_ports[i],
            }
            for i in self.client_ports
        ]
        return parse_config(
            {"cluster": {"node_id": node_id, "nodes": nodes, "cluster_id": "apitest"}}
        )

    async def start_node(self, node_id: int) -> RunningNode:
        config = self.config(node_id)
        logs = io.StringIO()
        logger = make_logger(logs, node=node_id)
        transport_logger: Any = logger  # structlog's logger fits the transport's EventLogger
        peers = {
            i: ("127.0.0.1", self.cluster_ports[i]) for i in self.cluster_ports if i != node_id
        }
        transport = TcpTransport(
            node_id,
            ("127.0.0.1", self.cluster_ports[node_id]),
            peers,
            16 * 1000**2,
            1024,
            transport_logger,
            cluster_id="apitest",
            random=RealRandom(),
        )
        await transport.start()
        node = await Node.open(
            NodeConfig(
                node_id=node_id,
                members=tuple(self.client_ports),
                cluster_id="apitest",
                # Longer than the defaults in multi-node clusters: on a loaded CI machine a
                # stalled loop must not look like a dead leader in the middle of a test.
                election_timeout_ticks_min=15 if self.size == 1 else 40,
                election_timeout_ticks_max=30 if self.size == 1 else 80,
                # Preallocated on disk: the 64 MB default would fill tmp dirs for nothing.
                wal_segment_size_bytes=4 * 1024 * 1024,
            ),
            fs=RealFileSystem(str(self.root / f"node{node_id}"), backend="pwrite"),
            transport=transport,
            clock=RealClock(),
            rng=RealRandom(),
        )
        node.start()
        registry = CollectorRegistry()
        app = create_app(node, config, registry, logger, admin_token=ADMIN_TOKEN)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.client_ports[node_id]).start()
        running = RunningNode(
            node,
            runner,
            f"http://127.0.0.1:{self.client_ports[node_id]}",
            logs,
            registry,
            transport,
        )
        self.nodes[node_id] = running
        return running

    async def start(self) -> Cluster:
        for node_id in sorted(self.client_ports):
            await self.start_node(node_id)
        await self.wait_for_leader()
        return self

    async def wait_for_leader(self, timeout_s: float = 60.0) -> int:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            for node_id, running in self.nodes.items():
                if (
                    running.node.status().role == "leader"
                    and running.node.status().applied_index >= 1
                ):
                    return node_id
            await asyncio.sleep(0.02)
        raise AssertionError("no leader elected")

    def leader(self) -> RunningNode:
        for running in self.nodes.values():
            if running.node.status().role == "leader":
                return running
        raise AssertionError("no leader")

    def follower(self) -> RunningNode:
        for running in self.nodes.values():
            if running.node.status().role != "leader":
                return running
        raise AssertionError("no follower")

    async def stop(self) -> None:
        for running in self.nodes.values():
            await running.stop()
        self.nodes.clear()


async def bootstrap(
    session: aiohttp.ClientSession, url: str, slug: str
) -> tuple[str, dict[str, Any]]:
    """Create a tenant; return its owner API key and the response body."""
    async with session.post(
        f"{url}/api/tenants",
        json={"slug": slug, "name": slug.title()},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as resp:
        body = await resp.json()
        assert resp.status == 201, body
    key: str = body["apiKey"]["key"]
    return key, body


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}
