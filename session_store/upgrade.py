"""Reading events written by older code: converters by (kind, schema), applied on read.

Every event carries ``schema``, the ``SCHEMA_VERSION`` of the code that wrote it.
Events of schema 1 do not store the field (the struct leaves out fields at their
default), so **a missing ``schema`` means 1**. When a change to an event's shape
ships, ``SCHEMA_VERSION`` goes up by one and a converter is registered for every
kind whose shape changed::

    @UPGRADER.register("group_message", 1)
    def _message_text_to_msg(doc):          # schema 1 -> 2
        doc["msg"] = doc.pop("text")
        return doc

A converter takes the event as a JSON object of schema ``s`` and returns it in
the shape of schema ``s + 1`` (it may change ``kind``); kinds without a converter
for a step pass through unchanged. Reading (replay, the archive, exports) decodes
through ``Upgrader.decode``, so new code replays old archives.

Rule for that change: keep ``EventBase.schema``'s default at 1 and write newer
events with ``schema=SCHEMA_VERSION`` explicitly (or make the field always
encoded); otherwise a schema-2 event would be written without the field and be
read back as schema 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from session_store.events import SCHEMA_VERSION, Event, decode_event, encode_event

Converter = Callable[[dict[str, Any]], dict[str, Any]]


class UpgradeError(ValueError):
    """An event that cannot be read by this code (newer schema, broken converter)."""


class Head(msgspec.Struct, kw_only=True):
    """The fields every reader needs without decoding the whole event."""

    kind: str
    scope: str
    version: int
    schema: int = 1
    run: str | None = None
    member: str | None = None
    to: str | None = None
    # run_ended only: finished | aborted | failed.
    state: str | None = None


_head_decoder = msgspec.json.Decoder(Head)
_any_decoder = msgspec.json.Decoder()


def decode_head(raw: bytes | str) -> Head:
    return _head_decoder.decode(raw)


class Upgrader:
    def __init__(self, current: int = SCHEMA_VERSION) -> None:
        self.current = current
        self.converters: dict[tuple[str, int], Converter] = {}

    def register(self, kind: str, schema: int) -> Callable[[Converter], Converter]:
        """Register the converter of ``kind`` from ``schema`` to ``schema + 1``."""
        if not 1 <= schema < self.current:
            raise ValueError(f"a converter goes from a schema in 1..{self.current - 1}")

        def add(converter: Converter) -> Converter:
            self.converters[(kind, schema)] = converter
            return converter

        return add

    def upgrade(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` (an event as a JSON object, any schema) in the current schema."""
        schema = doc.get("schema", 1)
        if type(schema) is not int or schema < 1:
            raise UpgradeError(f"bad schema {schema!r}")
        if schema > self.current:
            raise UpgradeError(
                f"a {doc.get('kind')} event of schema {schema} was written by newer code "
                f"(this code reads up to {self.current})")
        while schema < self.current:
            converter = self.converters.get((doc.get("kind", ""), schema))
            if converter is not None:
                doc = converter(doc)
            schema += 1
            doc["schema"] = schema
        return doc

    def decode(self, raw: bytes | str, schema: int | None = None) -> Event:
        """Decode a stored event into the current types (``schema`` if known already)."""
        if schema is None:
            schema = decode_head(raw).schema
        if schema == self.current:
            return decode_event(raw)
        doc = self.upgrade(_any_decoder.decode(raw))
        try:
            return msgspec.convert(doc, Event)
        except msgspec.ValidationError as exc:
            raise UpgradeError(f"{doc.get('kind')} upgraded from schema {schema}: {exc}") from None

    def encode(self, raw: bytes, schema: int) -> bytes:
        """The stored bytes in the current schema (unchanged when current already)."""
        if schema == self.current:
            return raw
        return encode_event(self.decode(raw, schema))


# The converters of this code base. None yet: SCHEMA_VERSION is 1.
UPGRADER = Upgrader()
