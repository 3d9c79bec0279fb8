"""Which faults a simulated run injects, and how hard.

A `FaultPlan` is a set of named fault kinds, each with an intensity in (0, 1]. The world
turns an intensity into concrete rates (crash every so many seconds, a loss probability,
...), so a plan is short to print and to pass on a command line:

    none                         no faults
    crash,partition              those kinds at the default intensity (0.5)
    crash=0.9,loss=0.2           explicit intensities
    all, all=0.9                 every kind, at the default or the given intensity
    swarm                        a seed-chosen random subset with random intensities

Swarm testing (Groce et al.): rather than every fault in every run, each seed switches on a
random subset, so that runs explore corners where one fault is frequent and others absent.
The subset and intensities are drawn from the run's RNG, so the seed names the plan.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mox.io.interfaces import Random

__all__ = ["FAULT_KINDS", "FaultPlan", "FaultPlanError"]

# Every fault kind, in the fixed order used for drawing and printing.
FAULT_KINDS: tuple[str, ...] = (
    "crash",  # a node crashes (unsynced writes lost) and restarts after a while
    "disk",  # disk latency, torn unsynced writes at a crash
    "loss",  # the network loses packets
    "duplicate",  # the network delivers packets twice
    "reorder",  # the network delays packets by widely varying amounts
    "partition",  # symmetric partitions into two sides, healed after a while
    "asymmetric",  # one-way link cuts
    "isolate_leader",  # the current leader is cut off from everyone
    "flapping",  # a link goes down and up again quickly, repeatedly
    "clock_drift",  # node clocks run fast or slow
    "vote_crash",  # a node crashes while persisting a new term or vote, restarts at once
    "election_storm",  # narrow election timeouts: concurrent candidacies are common
    "small_batches",  # AppendEntries carry few entries: followers ack a leader's log piecemeal
    "membership",  # (5 nodes) a member is removed, then added back: single-server changes
    # Disk corruption, on at most f = (n-1)/2 nodes of a run (chosen per seed), so that a
    # majority stays healthy. A node that reads damaged data stops for good (fail-stop).
    # Appended last: the swarm draws of the kinds above stay what they were for every seed.
    "corrupt_sector",  # bits flip at rest while the node runs, and transiently on read
    "misdirected_write",  # a write lands a few sectors away (not in the WAL: see docs)
)

DEFAULT_INTENSITY = 0.5


class FaultPlanError(ValueError):
    """A fault list that does not parse; names the offending item."""


@attrs.frozen
class FaultPlan:
    """Enabled fault kinds and their intensities, in `FAULT_KINDS` order."""

    intensities: Mapping[str, float] = attrs.field(factory=dict)
    swarm: bool = False

    def __attrs_post_init__(self) -> None:
        for kind, intensity in self.intensities.items():
            assert kind in FAULT_KINDS, kind
            assert 0.0 < intensity <= 1.0, (kind, intensity)

    @classmethod
    def none(cls) -> FaultPlan:
        return cls({})

    @classmethod
    def all(cls, intensity: float = DEFAULT_INTENSITY) -> FaultPlan:
        return cls({kind: intensity for kind in FAULT_KINDS})

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """`none`, `swarm`, `all`, or a comma list of `kind` / `kind=intensity`."""
        text = text.strip()
        if text == "none":
            return cls.none()
        if text == "swarm":
            return cls({}, swarm=True)
        if text == "all":
            return cls.all()
        if text.startswith("all="):
            value = text[len("all=") :]
            try:
                intensity = float(value)
            except ValueError:
                raise FaultPlanError(f"fault 'all': intensity {value!r} is not a number") from None
            if not 0.0 < intensity <= 1.0:
                raise FaultPlanError(f"fault 'all': intensity {value} not in (0, 1]")
            return cls.all(intensity)
        intensities: dict[str, float] = {}
        for item in text.split(","):
            item = item.strip()
            if not item:
                raise FaultPlanError(f"empty item in fault list {text!r}")
            kind, _, value = item.partition("=")
            kind = kind.strip()
            if kind not in FAULT_KINDS:
                raise FaultPlanError(
                    f"unknown fault {kind!r}; known: none, swarm, all, {', '.join(FAULT_KINDS)}"
                )
            if kind in intensities:
                raise FaultPlanError(f"fault {kind!r} given twice")
            intensity = DEFAULT_INTENSITY
            if value:
                try:
                    intensity = float(value)
                except ValueError:
                    raise FaultPlanError(
                        f"fault {kind!r}: intensity {value!r} is not a number"
                    ) from None
                if not 0.0 < intensity <= 1.0:
                    raise FaultPlanError(f"fault {kind!r}: intensity {value} not in (0, 1]")
            intensities[kind] = intensity
        ordered = {kind: intensities[kind] for kind in FAULT_KINDS if kind in intensities}
        return cls(ordered)

    def resolve(self, rng: Random) -> FaultPlan:
        """A swarm plan becomes a concrete one drawn from `rng`; a concrete plan is itself.

        Draws a fixed number of values whatever comes out, so the draw does not depend on
        which faults are enabled.
        """
        if not self.swarm:
            return self
        intensities: dict[str, float] = {}
        for kind in FAULT_KINDS:
            enabled = rng.random() < 0.5
            intensity = 0.1 + 0.9 * rng.random()
            if enabled:
                intensities[kind] = round(intensity, 3)
        return FaultPlan(intensities)

    def enabled(self, kind: str) -> bool:
        assert kind in FAULT_KINDS, kind
        return kind in self.intensities

    def intensity(self, kind: str) -> float:
        """The kind's intensity, 0.0 when disabled."""
        assert kind in FAULT_KINDS, kind
        return self.intensities.get(kind, 0.0)

    def describe(self) -> str:
        if self.swarm:
            return "swarm"
        if not self.intensities:
            return "none"
        return ",".join(f"{kind}={value:g}" for kind, value in self.intensities.items())

    def to_json(self) -> dict[str, float]:
        return dict(self.intensities)
