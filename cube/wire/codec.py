"""msgpack framing with hard limits, so a hostile frame cannot exhaust memory."""
from __future__ import annotations

from typing import Any

import msgpack

from cube.wire.errors import BAD_FRAME, CubeError

MAX_FRAME = 1 << 20  # 1 MiB: far above any legitimate message


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(frame: bytes) -> Any:
    if len(frame) > MAX_FRAME:
        raise CubeError(BAD_FRAME, f"frame of {len(frame)} bytes exceeds the {MAX_FRAME} byte limit")
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises many types (ExtraData, FormatError, ValueError...)
        raise CubeError(BAD_FRAME, f"frame is not valid msgpack: {type(e).__name__}") from None
