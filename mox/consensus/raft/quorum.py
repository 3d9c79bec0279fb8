"""Majority quorums over one configuration (no joint consensus: single-server changes)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable


def is_quorum(voters: Iterable[int], config: Collection[int]) -> bool:
    """Whether `voters` hold a strict majority of `config` (voters outside it do not count)."""
    assert config, "an empty configuration has no quorum"
    count = sum(1 for v in set(voters) if v in config)
    return 2 * count > len(config)


def committed_index(config: Collection[int], match_of: Callable[[int], int]) -> int:
    """The highest index that a strict majority of `config` has (the quorum's minimum)."""
    assert config
    matches = sorted((match_of(node) for node in config), reverse=True)
    # With n members, the (n // 2 + 1)-th highest match is held by a majority.
    return matches[len(matches) // 2]
