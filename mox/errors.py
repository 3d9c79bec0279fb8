"""Errors a user or operator can see. Each one names what is wrong and where.

Every error here is raised for bad input or a damaged environment, never for a bug:
bugs are `AssertionError`s. The CLI turns a `MoxError` into a one-line message and an
exit code (2 for usage and configuration errors, 3 for a node stopped on a storage
fault, 1 for the rest), never a traceback.
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


class StorageFaultError(MoxError):
    """A node stopped because its disk returned data that failed verification.

    Fail-stop: the node neither serves nor takes part in the cluster any more, so a damaged
    byte can never reach its state machine, its peers or a client. The cluster carries on as
    long as a majority of nodes is healthy. Carries the file and byte offset of the damage.
    Exit code 3, distinct from configuration errors (2) and other failures (1), so that a
    supervisor can tell "this disk lies: do not just restart" from a crash.
    """

    exit_code = 3

    def __init__(self, node_id: int, path: str, offset: int, problem: str) -> None:
        self.node_id = node_id
        self.path = path
        self.offset = offset
        self.problem = problem
        super().__init__(
            f"node {node_id} stopped on a storage fault: {path} at offset {offset}: {problem}"
        )

    @classmethod
    def from_error(cls, node_id: int, error: CorruptionError | FormatError) -> StorageFaultError:
        """The fault a CorruptionError or FormatError met while the node ran or recovered
        (a FormatError names no offset: the damage is in the file's header, offset 0)."""
        offset = error.offset if isinstance(error, CorruptionError) else 0
        return cls(node_id, error.path, offset, error.problem)
