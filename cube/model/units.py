"""Human-friendly sizes ("64m", "1.5g") to bytes and back."""
from __future__ import annotations

import math

MAX_SIZE = 2**63 - 1  # what msgpack and Docker can carry

_SUFFIX = {"": 1, "b": 1, "k": 1024, "kb": 1024, "ki": 1024, "kib": 1024,
           "m": 1024**2, "mb": 1024**2, "mi": 1024**2, "mib": 1024**2,
           "g": 1024**3, "gb": 1024**3, "gi": 1024**3, "gib": 1024**3,
           "t": 1024**4, "tb": 1024**4, "ti": 1024**4, "tib": 1024**4}


def parse_size(value: int | float | str) -> int:
    """Bytes from an int or a string such as '512m'; raises ValueError with the offending text."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0 or value > MAX_SIZE:
            raise ValueError(f"size must be between 0 and {MAX_SIZE} bytes: {value!r}")
        return int(value)
    text = str(value).strip().lower()
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    suffix = text[len(digits):]
    if suffix not in _SUFFIX or not digits:
        raise ValueError(f"not a size: {value!r} (use bytes or a suffix k, m, g, t)")
    try:
        number = float(digits)
    except ValueError:
        raise ValueError(f"not a size: {value!r}") from None
    size = number * _SUFFIX[suffix]
    if not math.isfinite(size) or size < 0 or size > MAX_SIZE:
        raise ValueError(f"size must be between 0 and {MAX_SIZE} bytes: {value!r}")
    return int(size)


def format_size(n: int, unit: str = "MiB") -> str:
    div = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]
    return f"{n / div:.0f}" if n >= div * 10 or n == 0 else f"{n / div:.1f}"


def describe_size(n: int) -> str:
    """A size for an error message, exact rather than rounded: "4MiB", "512KiB", "1000 bytes".

    Rounding would make 6291455 bytes read as "6.0MiB" next to a 6MiB minimum it is below.
    """
    for unit, div in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n} bytes"
