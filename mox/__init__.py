"""Mox: a TLA+-backed replicated, event-sourced database."""

__version__ = "0.1.0"
