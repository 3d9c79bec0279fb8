"""Mox's judges: the TLC runner, trace conformance, linearizability and invariant reports."""
