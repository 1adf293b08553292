"""A small, deterministic binary encoding for protocol messages.

JSON carries the structure (sorted keys, so the same value always encodes to the same bytes,
which signatures need); ``bytes`` values travel as raw blobs after it instead of base64, so a
1M-parameter masked vector costs 8 MB on the wire, not 11.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from fedcrm.errors import MessageRejectedError

_MAGIC = b"FCW1"
_BLOB = "$blob"


def encode(value: Any) -> bytes:
    blobs: list[bytes] = []

    def lift(item: Any) -> Any:
        if isinstance(item, (bytes, bytearray, memoryview)):
            blobs.append(bytes(item))
            return {_BLOB: len(blobs) - 1}
        if isinstance(item, dict):
            return {str(k): lift(item[k]) for k in sorted(item, key=str)}
        if isinstance(item, (list, tuple)):
            return [lift(v) for v in item]
        return item

    header = json.dumps(
        {"v": lift(value), "n": [len(b) for b in blobs]}, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()
    return b"".join([_MAGIC, struct.pack(">I", len(header)), header, *blobs])


def decode(data: bytes) -> Any:
    try:
        if data[:4] != _MAGIC:
            raise ValueError("bad magic")
        (size,) = struct.unpack(">I", data[4:8])
        header = json.loads(data[8 : 8 + size])
        offset, blobs = 8 + size, []
        for length in header["n"]:
            blobs.append(data[offset : offset + length])
            offset += length
        if offset != len(data) or any(len(b) != n for b, n in zip(blobs, header["n"])):
            raise ValueError("length mismatch")
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise MessageRejectedError(
            f"malformed protocol message ({exc})", hint="the message was truncated or corrupted in transit; it is ignored"
        ) from None

    def lower(item: Any) -> Any:
        if isinstance(item, dict):
            if set(item) == {_BLOB}:
                return blobs[item[_BLOB]]
            return {k: lower(v) for k, v in item.items()}
        if isinstance(item, list):
            return [lower(v) for v in item]
        return item

    return lower(header["v"])
