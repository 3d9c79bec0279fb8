"""Consensus protocols as sans-IO state machines (Raft now, VSR later).

A core here imports only the standard library, msgspec/attrs and its own package: no IO, no
clock, no randomness. The node runtime (`mox.node`) drives it over the IO seam.
"""
