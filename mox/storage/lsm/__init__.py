"""The LSM state store: memtable, checksummed SSTables with bloom filters, a manifest,
bounded-step leveled compaction, MVCC snapshots. See docs/lsm.md."""

from mox.storage.lsm.store import LsmOptions, LsmStore, LsmStoreFailed, Snapshot

__all__ = ["LsmOptions", "LsmStore", "LsmStoreFailed", "Snapshot"]
