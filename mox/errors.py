"""Errors a user or operator can see. Each one names what is wrong and where.

Every error here is raised for bad input or a damaged environment, never for a bug:
bugs are `AssertionError`s. The CLI turns a `MoxError` into a one-line message and an
exit code (2 for usage and configuration errors, 1 for the rest), never a traceback.
"""

from __future__ import annotations


class MoxError(Exception):
    """Base class of every error Mox reports to a user."""

    exit_code: int = 1


class ConfigError(MoxError):
    """A configuration key is missing, unknown, of the wrong type or out of range."""

    exit_code = 2

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config key {key!r}: {problem}")


class CorruptionError(MoxError):
    """Bytes on disk failed verification. Carries the file and the byte offset."""

    def __init__(self, path: str, offset: int, problem: str) -> None:
        self.path = path
        self.offset = offset
        self.problem = problem
        super().__init__(f"corruption in {path} at offset {offset}: {problem}")


class FormatError(MoxError):
    """A file is not a Mox file of this kind or version (wrong magic, version, owner)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class DataDirError(MoxError):
    """The data directory belongs to another node or cluster, or cannot be used."""

    exit_code = 2

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"data directory {path}: {problem}")
