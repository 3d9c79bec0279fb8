"""File formats over the FileSystem protocol: the WAL, the superblock, the LSM state store.

Nothing here calls `os` or `open` for data: every byte goes through `mox.io.interfaces`.
"""
