"""How the values a protocol message carries become JSON: arrays and binary messages.

Values are encoded to JSON by pydantic from the declared types of the messages in
``fedcrm.protocol``, never pickled: a party decodes only the types it expects, so a forged message
cannot run code. Arrays travel as typed base64 blobs (``Vector``: numeric dtypes only), binary
protocol messages as ``Blob``, a federated-sum contribution as either (``Payload``).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

import numpy as np
from pydantic import PlainSerializer, PlainValidator



def _array_in(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, dict) and {"dtype", "shape", "data"} <= set(value):
        dtype = np.dtype(value["dtype"])
        if dtype.kind not in "fiub":
            raise ValueError(f"array dtype {dtype} is not numeric")
        raw = base64.b64decode(value["data"], validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape(value["shape"]).copy()
    raise ValueError("not an encoded array")


def _array_out(value: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(value)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def _blob_in(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict) and set(value) == {"blob"}:
        return base64.b64decode(value["blob"], validate=True)
    raise ValueError("not an encoded blob")


Vector = Annotated[np.ndarray, PlainValidator(_array_in), PlainSerializer(_array_out)]
"""A numpy array on the wire: dtype, shape and base64 bytes (numeric dtypes only)."""

def _blob_out(value: bytes) -> dict[str, str]:
    return {"blob": base64.b64encode(value).decode()}


Blob = Annotated[bytes, PlainValidator(_blob_in), PlainSerializer(_blob_out)]
"""Binary data on the wire (signed secure-aggregation messages)."""

Payload = Annotated[
    bytes | np.ndarray,
    PlainValidator(lambda v: _blob_in(v) if isinstance(v, (bytes, bytearray)) or "blob" in v else _array_in(v)),
    PlainSerializer(lambda v: _blob_out(v) if isinstance(v, bytes) else _array_out(v)),
]
"""A federated-sum contribution: a masked message (bytes) or, to a plain aggregator, the vector."""
