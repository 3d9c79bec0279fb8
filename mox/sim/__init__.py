"""The deterministic simulator: whole Mox clusters in virtual time (see docs/simulation.md).

`mox.sim.world.World` runs one seed; `mox.sim.cli` is `mox simulate`; `network`, `faults`,
`workload` and `invariants` are its parts.
"""
