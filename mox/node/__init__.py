"""The node runtime: one Raft core driven over the IO seam (`mox.node.runtime.Node`).

The same `Node` runs under `mox start` (real files, TCP, the system clock) and under the
simulator (`mox.sim`: SimDisk, SimNetwork, virtual time). Import from the submodules; this
package imports nothing itself, so `mox.node.cli` stays cheap to load.
"""
