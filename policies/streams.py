"""Stream redactions: SSE events rewritten as they pass, holding back only text a match could still need."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from policies.engine import redact_text
from policies.spec import DEFAULT_REPLACEMENT, STREAM_HOLD_LIMIT, STREAM_HOLD_MAX, PolicySpec, Redaction
from policies.surfaces import Surface, surface_for

# Raw text kept before a stream's release point, so \b and lookbehinds see what came before.
STREAM_CONTEXT_CHARS = 64


def stream_needs_rewrite(spec: PolicySpec, surface: str | Surface) -> bool:
    """Whether a stream's events must pass through a StreamRewriter at all."""
    return bool(spec.response_redactions) and surface_for(surface).streams_text


@dataclass(slots=True)
class _HeldText:
    context: str = ""  # raw text already released, for \b and anchors
    pending: str = ""  # raw text held back: it could still be the start of a match
    walked: int = 0  # how much was held at the last analysis (a long hold is re-analysed as it doubles)
    given_up: bool = False  # the hold outgrew its bound: the rest of this channel is withheld
    holder: Redaction | None = None  # the redaction whose possible match is held


class StreamRewriter:
    """Redacts answer text across a stream's events, per channel (a choice, a content part, a block).

    The surface adapter says which events carry text and on which channel; each channel
    holds back only the tail in which a match could still begin (see PrefixMatcher), at
    most STREAM_HOLD_LIMIT characters, extended back to the start of any complete match
    the cut would split. Held text is released, redacted, when the adapter says its
    channel is finished (a finish_reason, a .done event, content_block_stop) or by flush().
    """

    def __init__(self, spec: PolicySpec, surface: str | Surface, *, hold_max: int = STREAM_HOLD_MAX) -> None:
        self._surface = surface_for(surface)
        self._hold_max = hold_max
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
        """The part of the channel's text that can be sent now, redacted; `final` sends all it holds.

        Text that might still be part of a match is held, however long the match runs, up to
        hold_max characters; past that the stream fails closed: the held text goes out as the
        redaction's replacement, and the rest of the channel is withheld, never shown raw.
        """
        state = self._channels.get(channel)
        if state is None:
            if final and not text:
                return ""
            state = self._channels[channel] = _HeldText()
        if state.given_up:
            if final:
                del self._channels[channel]
            return ""
        buffer = state.context + state.pending + text
        start = len(state.context)
        if final:
            cut, holder = len(buffer), None
        elif STREAM_HOLD_LIMIT < len(buffer) - start < 2 * state.walked:
            # A long hold is analysed again only once it has doubled: linear time over the whole match.
            cut, holder = start, state.holder
        else:
            cut, holder = _release_point(self._redactions, buffer, start)
            state.walked, state.holder = len(buffer) - cut, holder
        released = _redact_span(self._redactions, buffer, start, cut)
        if final:
            del self._channels[channel]
        elif len(buffer) - cut > self._hold_max:
            state.given_up, state.context, state.pending = True, "", ""
            released += _placeholder(holder)
        else:
            state.context = buffer[max(0, cut - STREAM_CONTEXT_CHARS) : cut]
            state.pending = buffer[cut:]
        return released


def _release_point(redactions: tuple[Redaction, ...], buffer: str, start: int) -> tuple[int, Redaction | None]:
    """Index in buffer before which text can be sent (no match can begin or change there), and the
    redaction whose unfinished match holds the rest (None when nothing is held for an open match)."""
    cut, holder = len(buffer), None
    for redaction in redactions:
        begin = _open_start(redaction, buffer, start)
        if begin < cut:
            cut, holder = begin, redaction
    spans = [(m.span(), r) for r in redactions for m in r.regex.finditer(buffer, start)]
    while True:
        # Never split a complete match: hold it whole until the text after it is settled.
        split = [(begin, r) for (begin, end), r in spans if begin < cut < end]
        if not split:
            return cut, holder
        cut, holder = min(split, key=lambda found: found[0])


def _open_start(redaction: Redaction, buffer: str, start: int) -> int:
    """Where the earliest match that more text could still complete or extend may begin."""
    if redaction.prefix is None:
        # No analysis of the pattern (RE2-only syntax): a match may begin anywhere in a fixed window.
        return max(start, len(buffer) - STREAM_HOLD_LIMIT)
    found = redaction.prefix.open_start(buffer, start)
    return len(buffer) if found is None else found


def _placeholder(redaction: Redaction | None) -> str:
    """What a stream shows for held text it must give up on: the redaction's own replacement when it is literal."""
    if redaction is None or "\\" in redaction.replacement:
        return DEFAULT_REPLACEMENT
    return redaction.replacement


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
