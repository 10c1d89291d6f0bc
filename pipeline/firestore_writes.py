"""Raw Firestore `Write` protos for the ledger commit (the client's proto-plus path costs most of the sink's CPU)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from google.cloud.firestore_v1.types import common, document, firestore, write

_Write = write.Write.pb()
_Document = document.Document.pb()
_Value = document.Value.pb()
_Precondition = common.Precondition.pb()
_Mask = common.DocumentMask.pb()
_Transform = write.DocumentTransform.FieldTransform.pb()
_CommitRequest = firestore.CommitRequest.pb()
_REQUEST_TIME = write.DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME


def _set(target: Any, value: Any) -> None:
    """Fill a Value proto from str / bool / int / None / datetime / list / dict."""
    if value is None:
        target.null_value = 0
    elif isinstance(value, bool):
        target.boolean_value = value
    elif isinstance(value, int):
        target.integer_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, dt.datetime):
        target.timestamp_value.FromDatetime(value.astimezone(dt.UTC).replace(tzinfo=None))
    elif isinstance(value, list):
        array = target.array_value
        array.SetInParent()
        for item in value:
            _set(array.values.add(), item)
    elif isinstance(value, Mapping):
        fields = target.map_value
        fields.SetInParent()
        for key, item in value.items():
            _set(fields.fields[key], item)
    else:
        raise TypeError(f"no Firestore encoding for {type(value).__name__}")


def _whole(precondition: Any, name: str, fields: Mapping[str, Any], server_time: tuple[str, ...]) -> Any:
    """Write `name` whole under `precondition`; `server_time` fields get the commit time."""
    pb = _Write(current_document=precondition)
    pb.update.name = name
    for key, value in fields.items():
        _set(pb.update.fields[key], value)
    for field in server_time:
        pb.update_transforms.append(_Transform(field_path=field, set_to_server_value=_REQUEST_TIME))
    return pb


def create(name: str, fields: Mapping[str, Any], server_time: tuple[str, ...] = ()) -> Any:
    """Create `name` with `fields` (fails with AlreadyExists if it exists); `server_time` fields get the commit time."""
    return _whole(_Precondition(exists=False), name, fields, server_time)


def replace_if_unchanged(name: str, fields: Mapping[str, Any], update_time: Any | None,
                         server_time: tuple[str, ...] = ()) -> Any:
    """Write `name` whole, only if it is still the version read: its `update_time` (a Timestamp proto), or
    absent when `update_time` is None (fails with FailedPrecondition / AlreadyExists otherwise)."""
    if update_time is None:
        return create(name, fields, server_time)
    return _whole(_Precondition(update_time=update_time), name, fields, server_time)


def increment(name: str, increments: Mapping[str, int], server_time: tuple[str, ...] = ()) -> Any:
    """Upsert `name` changing only the given counters (by Increment) and server-time fields."""
    pb = _Write(update=_Document(name=name), update_mask=_Mask())
    for field, delta in increments.items():
        pb.update_transforms.append(_Transform(field_path=field, increment=_Value(integer_value=delta)))
    for field in server_time:
        pb.update_transforms.append(_Transform(field_path=field, set_to_server_value=_REQUEST_TIME))
    return pb


def commit_request(database: str, writes: list[Any]) -> firestore.CommitRequest:
    """A CommitRequest wrapping the raw writes without copying them."""
    return firestore.CommitRequest.wrap(_CommitRequest(database=database, writes=writes))
