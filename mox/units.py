"""Durations and sizes as people write them in mox.toml: "150ms", "30s", "64MB", "16MiB".

Sizes: a bare integer (or digits) is bytes; KB/MB/GB/TB are powers of 1000 and
KiB/MiB/GiB/TiB powers of 1024 (as the units say). Durations need a unit: us, ms, s, m, h.
Every error is a ConfigError naming the key the value came from.
"""

from __future__ import annotations

import re

from mox.errors import ConfigError

__all__ = ["format_duration_s", "format_size_bytes", "parse_duration_s", "parse_size_bytes"]

_SIZE_UNITS_BYTES: dict[str, int] = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}

_DURATION_UNITS_S: dict[str, float] = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size_bytes(value: object, key: str) -> int:
    """`value` (an int, or a string like "64MB", "16MiB", "4096") as a whole number of bytes."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a size like '64MB' or a byte count, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(key, f"size must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ConfigError(
            key, f"expected a size like '64MB' or a byte count, got {type(value).__name__}"
        )
    match = _NUMBER_UNIT.match(value)
    if match is None:
        raise ConfigError(
            key, f"cannot parse size {value!r} (expected e.g. '64MB', '16MiB', '4096')"
        )
    number, unit = match.groups()
    multiplier = _SIZE_UNITS_BYTES.get(unit.upper())
    if multiplier is None:
        raise ConfigError(
            key,
            f"unknown size unit {unit!r} in {value!r} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)",
        )
    size = float(number) * multiplier
    if size != int(size):
        raise ConfigError(key, f"size {value!r} is not a whole number of bytes")
    return int(size)


def parse_duration_s(value: object, key: str) -> float:
    """`value` (a string like "150ms", "30s", "2m") in seconds. A bare number is refused:
    the unit must be explicit."""
    if not isinstance(value, str):
        raise ConfigError(
            key, f"expected a duration with a unit like '150ms' or '30s', got {value!r}"
        )
    match = _NUMBER_UNIT.match(value)
    if match is None:
        raise ConfigError(
            key, f"cannot parse duration {value!r} (expected e.g. '150ms', '30s', '2m')"
        )
    number, unit = match.groups()
    if not unit:
        raise ConfigError(key, f"duration {value!r} needs a unit (us, ms, s, m, h)")
    multiplier = _DURATION_UNITS_S.get(unit)
    if multiplier is None:
        raise ConfigError(key, f"unknown duration unit {unit!r} in {value!r} (use us, ms, s, m, h)")
    return float(number) * multiplier


def format_size_bytes(size_bytes: int) -> str:
    """A short human form of a byte count (binary units), for tables and messages."""
    assert size_bytes >= 0
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration_s(duration_s: float) -> str:
    """A short human form of a duration, for tables and messages."""
    assert duration_s >= 0
    if duration_s < 1e-3:
        return f"{duration_s * 1e6:.0f} us"
    if duration_s < 1:
        return f"{duration_s * 1e3:.1f} ms"
    return f"{duration_s:.2f} s"
