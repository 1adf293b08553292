"""The messages a coordinator and a region exchange during a job, and their typed encoding.

A request names a regional step and carries its arguments; a reply carries the step's
releasable value or why the region failed it. Values are encoded to JSON from the step's own
type hints (pydantic), never pickled: a party decodes only the types it expects, so a forged
message cannot run code. Arrays travel as typed base64 blobs (``Vector``), binary protocol
messages as ``Blob``. Every message is then sealed in a signed ``Envelope`` (fedcrm.secagg),
bound to the job, its sequence number, the sender and the recipient.
"""

from __future__ import annotations

import base64
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, PlainSerializer, PlainValidator, TypeAdapter

from fedcrm.audit import AuditHead
from fedcrm.errors import MessageRejectedError


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


class StepRequest(BaseModel):
    """The coordinator asks a region to run one step of the job."""

    step: str
    arguments: dict[str, Any] = {}


class StepReply(BaseModel):
    """A region's answer: a releasable value, or why it could not take part."""

    ok: bool
    value: Any = None
    reason: str = ""
    elapsed_s: float = 0.0
    """Seconds the region spent on the step (so the coordinator can tell compute from transport)."""
    audit_head: AuditHead | None = None
    """The region's audit head as it sent the reply (a sequence number and a hash, no data): the
    coordinator records it, so the region cannot later cut its log short below it unnoticed."""


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    target = getattr(function, "fn", function)  # a Prefect task keeps its function in .fn
    return typing.get_type_hints(target, include_extras=True)


def encode_arguments(function: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    hints = _hints(function)
    unknown = set(arguments) - set(hints)
    if unknown:
        raise TypeError(f"{getattr(function, 'name', function)} takes no argument(s) {sorted(unknown)}")
    return {name: TypeAdapter(hints[name]).dump_python(value, mode="json") for name, value in arguments.items()}


def decode_arguments(function: Callable[..., Any], encoded: dict[str, Any], *, allowed: set[str]) -> dict[str, Any]:
    """The typed arguments; ``allowed`` names those a sender may set (the region supplies the rest itself)."""
    hints = _hints(function)
    refused = set(encoded) - (allowed & set(hints))
    if refused:
        raise MessageRejectedError(f"request sets argument(s) {sorted(refused)} that the coordinator may not set",
                                   hint="the request is ignored")
    try:
        return {name: TypeAdapter(hints[name]).validate_python(value) for name, value in encoded.items()}
    except ValueError as exc:
        raise MessageRejectedError(f"request with malformed arguments ({type(exc).__name__})",
                                   hint="the request is ignored") from None


def reply_type(function: Callable[..., Any]) -> Any:
    """``T`` of a step returning ``RegionReply[T]``."""
    returned = _hints(function)["return"]
    arguments = typing.get_args(returned)
    return arguments[0] if arguments else Any


def encode_value(function: Callable[..., Any], value: Any) -> Any:
    return TypeAdapter(reply_type(function)).dump_python(value, mode="json")


def decode_value(function: Callable[..., Any], encoded: Any) -> Any:
    try:
        return TypeAdapter(reply_type(function)).validate_python(encoded)
    except ValueError as exc:
        raise MessageRejectedError(f"reply with a malformed value ({type(exc).__name__})",
                                   hint="the region's reply is ignored") from None


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(getattr(function, "fn", function)).parameters)
