"""Stream redactions: SSE events rewritten as they pass, holding back only text a match could still need."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from policies.engine import redact_text
from policies.spec import STREAM_HOLD_LIMIT, PolicySpec, Redaction
from policies.surfaces import Surface, surface_for

# Raw text kept before a stream's release point, so \b and lookbehinds see what came before.
STREAM_CONTEXT_CHARS = 64


def stream_needs_rewrite(spec: PolicySpec, surface: str | Surface) -> bool:
    """Whether a stream's events must pass through a StreamRewriter at all."""
    return bool(spec.response_redactions) and surface_for(surface).streams_text


@dataclass(slots=True)
class _HeldText:
    context: str = ""  # raw text already released, for \b and lookbehinds
    pending: str = ""  # raw text held back: it could still be the start of a match


class StreamRewriter:
    """Redacts answer text across a stream's events, per channel (a choice, a content part, a block).

    The surface adapter says which events carry text and on which channel; each channel
    holds back only the tail in which a match could still begin (see PrefixMatcher), at
    most STREAM_HOLD_LIMIT characters, extended back to the start of any complete match
    the cut would split. Held text is released, redacted, when the adapter says its
    channel is finished (a finish_reason, a .done event, content_block_stop) or by flush().
    """

    def __init__(self, spec: PolicySpec, surface: str | Surface) -> None:
        self._surface = surface_for(surface)
        self._active = stream_needs_rewrite(spec, self._surface)
        self._redactions = spec.response_redactions
        self._channels: dict[Hashable, _HeldText] = {}
        self._last: dict[str, Any] = {}

    def on_event(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The events to send in place of `event`: [event] itself when nothing changed."""
        if not self._active or not isinstance(event, dict):
            return [event]
        self._last = event
        return self._surface.rewrite_event(event, self)

    def flush(self) -> list[dict[str, Any]]:
        """Events releasing text still held when the stream ends without closing its channels."""
        released = {channel: self.release(channel, "", final=True) for channel in list(self._channels)}
        return self._surface.released_events({c: text for c, text in released.items() if text}, self._last)

    def redact(self, text: str) -> str:
        """A whole text redacted at once (the events that repeat what the deltas said)."""
        return redact_text(self._redactions, text)

    def release(self, channel: Hashable, text: str, *, final: bool) -> str:
        """The part of the channel's text that can be sent now, redacted; `final` sends all it holds."""
        state = self._channels.get(channel)
        if state is None:
            if final and not text:
                return ""
            state = self._channels[channel] = _HeldText()
        buffer = state.context + state.pending + text
        start = len(state.context)
        cut = len(buffer) if final else _release_point(self._redactions, buffer, start)
        released = _redact_span(self._redactions, buffer, start, cut)
        if final:
            del self._channels[channel]
        else:
            state.context = buffer[max(0, cut - STREAM_CONTEXT_CHARS) : cut]
            state.pending = buffer[cut:]
        return released


def _release_point(redactions: tuple[Redaction, ...], buffer: str, start: int) -> int:
    """Index in buffer before which text can be sent: no match can begin or change there."""
    # Text further back than the hold limit is released even if a match could begin in it.
    first = max(start, len(buffer) - STREAM_HOLD_LIMIT)
    cut = len(buffer)
    for redaction in redactions:
        cut = min(cut, _open_start(redaction, buffer, first))
    spans = [m.span() for r in redactions for m in r.regex.finditer(buffer, start)]
    while True:
        # Never split a complete match: hold it whole until the text after it is settled.
        split = [begin for begin, end in spans if begin < cut < end]
        if not split:
            return cut
        earliest = min(split)
        if len(buffer) - earliest > STREAM_HOLD_LIMIT:
            # A match longer than the hold limit: send it, redacted, rather than hold more.
            return len(buffer)
        cut = earliest


def _open_start(redaction: Redaction, buffer: str, first: int) -> int:
    """Where the earliest match that more text could still complete or extend may begin."""
    if redaction.prefix is None:
        # No analysis of the pattern: a match may begin anywhere in the held window.
        return first
    found = redaction.prefix.open_start(buffer, first)
    return len(buffer) if found is None else found


def _redact_span(redactions: tuple[Redaction, ...], buffer: str, start: int, end: int) -> str:
    """buffer[start:end] redacted, with the text around it visible to anchors and lookarounds."""
    for redaction in redactions:
        pieces = []
        last = start
        for match in redaction.regex.finditer(buffer, start):
            if match.start() >= end:
                break
            if match.end() > end:
                continue
            pieces.append(buffer[last : match.start()])
            pieces.append(match.expand(redaction.replacement))
            last = match.end()
        if not pieces:
            continue
        pieces.append(buffer[last:end])
        middle = "".join(pieces)
        buffer = buffer[:start] + middle + buffer[end:]
        end = start + len(middle)
    return buffer[start:end]
