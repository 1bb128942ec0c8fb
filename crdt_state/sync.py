"""The sync protocol between two documents, the Yjs way, without any I/O.

  SyncStep1(state_vector, reply)  "this is what I have"; the receiver answers with a
                                  SyncStep2 holding what the sender lacks, plus (when `reply`
                                  is set and the sender has something the receiver lacks) its
                                  own SyncStep1 with reply=False, so one exchange goes both
                                  ways and never loops.
  SyncStep2(update)               the answer to a SyncStep1; applied like an Update.
  Update(update)                  a fresh local change pushed eagerly.

A pushed Update that depends on changes the receiver has not seen is refused by the document;
the receiver answers it with a SyncStep1 so the sender fills the gap.

Wire form: one tag byte (1 step1, 2 step2, 3 update), then for step1 one flag byte (reply),
then the raw payload. `encode_batch`/`decode_batch` pack several messages into one payload
(a msgpack array of encoded messages) for request/reply transports.

Additive to the agreed interface: `handle_message(doc, msg)` returns the replies and the
ApplyResult (for logging refusals and appending accepted updates to the store);
`handle(doc, msg)` returns the replies only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import msgpack

from crdt_state.document import MAX_UPDATE, ApplyResult, ClusterDocument, DocumentError
from crdt_state.state_vector import StateVectorError, decode_state_vector

_STEP1, _STEP2, _UPDATE = 1, 2, 3
MAX_BATCH = 16


class SyncError(ValueError):
    """A sync message that cannot be decoded or answered; nothing was applied."""


@dataclass(frozen=True)
class SyncStep1:
    state_vector: bytes
    reply: bool = True


@dataclass(frozen=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True)
class Update:
    update: bytes


Message = Union[SyncStep1, SyncStep2, Update]


def encode(message: Message) -> bytes:
    if isinstance(message, SyncStep1):
        return bytes([_STEP1, 1 if message.reply else 0]) + message.state_vector
    if isinstance(message, SyncStep2):
        return bytes([_STEP2]) + message.update
    if isinstance(message, Update):
        return bytes([_UPDATE]) + message.update
    raise SyncError(f"not a sync message: {type(message).__name__}")


def decode(data: bytes) -> Message:
    if not isinstance(data, (bytes, bytearray)):
        raise SyncError(f"sync message must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise SyncError("empty sync message")
    if len(data) > MAX_UPDATE + 2:
        raise SyncError(f"sync message of {len(data)} bytes is over the limit")
    tag = data[0]
    if tag == _STEP1:
        if len(data) < 2 or data[1] not in (0, 1):
            raise SyncError("sync step 1 lacks its reply flag")
        state_vector = data[2:]
        try:
            decode_state_vector(state_vector)
        except StateVectorError as exc:
            raise SyncError(str(exc)) from None
        return SyncStep1(state_vector, reply=bool(data[1]))
    if tag in (_STEP2, _UPDATE):
        if len(data) < 2:
            raise SyncError("sync message carries no update")
        return SyncStep2(data[1:]) if tag == _STEP2 else Update(data[1:])
    raise SyncError(f"unknown sync message type {tag}")


def encode_batch(messages: list[Message]) -> bytes:
    return msgpack.packb([encode(message) for message in messages], use_bin_type=True)


def decode_batch(data: bytes) -> list[Message]:
    try:
        items = msgpack.unpackb(data, raw=False, max_array_len=MAX_BATCH, max_bin_len=MAX_UPDATE + 2)
    except Exception as exc:
        raise SyncError(f"sync batch does not decode: {exc}") from None
    if not isinstance(items, list) or not all(isinstance(item, bytes) for item in items):
        raise SyncError("sync batch must be a list of encoded messages")
    return [decode(item) for item in items]


def lacks_from(ours: dict[int, int], theirs: dict[int, int]) -> bool:
    """True when the peer's state vector has changes ours does not."""
    return any(clock > ours.get(client, 0) for client, clock in theirs.items())


def handle_message(doc: ClusterDocument, message: Message) -> tuple[list[Message], ApplyResult | None]:
    if isinstance(message, SyncStep1):
        try:
            diff = doc.update_since(message.state_vector)
        except DocumentError as exc:
            raise SyncError(str(exc)) from None
        replies: list[Message] = [SyncStep2(diff)]
        try:
            theirs = decode_state_vector(message.state_vector)
        except StateVectorError as exc:
            raise SyncError(str(exc)) from None
        if message.reply and lacks_from(decode_state_vector(doc.state_vector()), theirs):
            replies.append(SyncStep1(doc.state_vector(), reply=False))
        return replies, None
    if isinstance(message, (SyncStep2, Update)):
        result = doc.apply_remote(message.update)
        # Only a pushed Update asks for the gap: a SyncStep2 already answered our state
        # vector, and asking again could loop.
        if result.missing and isinstance(message, Update):
            return [SyncStep1(doc.state_vector(), reply=False)], result
        return [], result
    raise SyncError(f"not a sync message: {type(message).__name__}")


def handle(doc: ClusterDocument, message: Message) -> list[Message]:
    return handle_message(doc, message)[0]
