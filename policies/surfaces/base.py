"""The interface every surface adapter implements, with the do-nothing defaults most surfaces keep."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, Protocol

import orjson

Redact = Callable[[str], str]
# "developer" is the newer name OpenAI gives system instructions; both count as the client's.
SYSTEM_ROLES = frozenset({"system", "developer"})


class TextHold(Protocol):
    """What a stream adapter may ask of the rewriter that holds back text a redaction may still need."""

    def release(self, channel: Hashable, text: str, *, final: bool) -> str: ...

    def redact(self, text: str) -> str: ...


class Assembler(Protocol):
    """Rebuilds one response, in the surface's own shape, from its stream's events (for the audit record)."""

    def add(self, event: dict[str, Any]) -> None: ...

    def result(self) -> dict[str, Any]: ...

    @property
    def object_id(self) -> str | None: ...


class Surface:
    """One API dialect: where its model, system prompt, user text, limits, answer text and stream events live.

    The engine applies a policy's rules through these methods and the relay asks them about
    stream events; neither knows a dialect's shapes. A surface that lacks a concept keeps the
    default, which does nothing.
    """

    name: str = ""  # the endpoint's name in the audit record
    group: str = ""  # the name a policy allows or refuses (allowed_surfaces)
    names_model: bool = False  # the body's "model" is aliased and checked
    has_system_prompt: bool = False  # the policy's system context applies
    takes_params: bool = False  # parameter defaults, overrides, model rules and the token ceiling apply
    token_limit_params: tuple[str, ...] = ()
    renames_params: bool = False  # param() renames or drops some of a policy's parameters
    sets_user: bool = False
    streams_text: bool = False  # its streams carry answer text (redactions apply to them)
    annotates: bool = True  # JSON answers get _proxy_info when the policy asks
    stores_objects: bool = False  # the upstream keeps what it answers, by an id that then belongs to the caller

    # --- requests -------------------------------------------------------------------------

    def request_texts(self, body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(request field, text) for every client-controlled text the model will read."""
        return iter(())

    def add_system_context(self, body: dict[str, Any], text: str, mode: str) -> bool:
        """Put the policy's system context where this surface keeps its system prompt; True if changed."""
        return False

    def param(self, name: str, value: Any) -> tuple[str, Any] | None:
        """A policy parameter in this surface's own terms, or None when it means nothing here."""
        return name, value

    def set_user(self, body: dict[str, Any], value: str, *, override: bool) -> bool:
        """Identify the end user in this surface's own field; True if the body changed."""
        if body.get("user") is not None and not override:
            return False
        if body.get("user") == value:
            return False
        body["user"] = value
        return True

    def referenced_objects(self, body: Any) -> Iterator[tuple[str, str]]:
        """(request field, id) of stored objects the request builds on: each must belong to the caller."""
        return iter(())

    # --- responses ------------------------------------------------------------------------

    def redact_response(self, body: dict[str, Any], redact: Redact) -> dict[str, Any]:
        """The JSON answer with its text redacted; the same object when nothing changed."""
        return body

    def stored_id(self, body: Any) -> str | None:
        """The id of the object the upstream stored for this answer, which then belongs to the caller."""
        return None

    def error_body(self, error: dict[str, Any]) -> dict[str, Any]:
        """The body of an error aiproxy answers itself, from OpenAI's error object."""
        return {"error": error}

    # --- streams --------------------------------------------------------------------------

    def with_stream_usage(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The body asking the upstream to report a stream's usage, or None when it will anyway (or cannot)."""
        return None

    def is_usage_only(self, event: dict[str, Any]) -> bool:
        """Whether this stream event carries only the usage with_stream_usage asked for."""
        return False

    def frame(self, event: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(event) + b"\n\n"

    def is_terminal(self, event: dict[str, Any]) -> bool:
        """Whether this event ends a complete stream (besides `data: [DONE]`, which ends any)."""
        return False

    def error_event(self, error: dict[str, Any]) -> bytes:
        """The last event of a stream that failed after its headers were sent."""
        return self.frame({"error": error})

    def rewrite_event(self, event: dict[str, Any], hold: TextHold) -> list[dict[str, Any]]:
        """The events to send in place of `event`: [event] itself when nothing changed."""
        return [event]

    def released_events(self, released: dict[Hashable, str], last: dict[str, Any]) -> list[dict[str, Any]]:
        """Events carrying text still held when the stream ended, per channel; `last` is the last event."""
        return []

    def assembler(self) -> Assembler:
        return EmptyAssembler()


class EmptyAssembler:
    """For surfaces whose streams carry no text of their own: keeps the last event."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def add(self, event: dict[str, Any]) -> None:
        self.last = event

    def result(self) -> dict[str, Any]:
        return self.last

    @property
    def object_id(self) -> str | None:
        return None


def named_event_frame(event: dict[str, Any]) -> bytes:
    """`event: <type>` then the data: how the Responses and Messages APIs frame their events."""
    kind = event.get("type")
    head = b"event: " + kind.encode() + b"\n" if isinstance(kind, str) and kind.isprintable() else b""
    return head + b"data: " + orjson.dumps(event) + b"\n\n"


def part_texts(value: Any) -> Iterator[str]:
    """Texts of a content value: a string, or a list of parts/blocks each with a "text"."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, str):
                yield part
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def is_system_item(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") in SYSTEM_ROLES
