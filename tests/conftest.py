"""Shared pytest configuration. `--soak` enables the long, opt-in runs marked `soak`;
`--pause-nodes SEED` deschedules nodes of real-process clusters at random (see
test_cluster_support.NodePauser)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False, help="run long soak tests")
    parser.addoption(
        "--pause-nodes",
        type=int,
        default=None,
        metavar="SEED",
        help="real-process cluster tests: SIGSTOP random nodes for 0.2-0.8 s every 0.5-2 s "
        "(a loaded machine; finds tests that assume a stable leader)",
    )


def pytest_configure(config: pytest.Config) -> None:
    seed = config.getoption("--pause-nodes")
    if seed is not None:
        import test_cluster_support

        test_cluster_support.PAUSE_NODES_SEED = seed


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
