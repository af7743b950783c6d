"""Stream redactions: SSE chunks rewritten as they pass, holding back only text a match could still need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.engine import COMPLETIONS, GENERATION_ENDPOINTS
from policies.spec import STREAM_HOLD_LIMIT, PolicySpec, Redaction

# Raw text kept before a stream's release point, so \b and lookbehinds see what came before.
STREAM_CONTEXT_CHARS = 64


def stream_needs_rewrite(spec: PolicySpec, endpoint: str) -> bool:
    """Whether a stream's events must pass through a StreamRewriter at all."""
    return bool(spec.response_redactions) and endpoint in GENERATION_ENDPOINTS


@dataclass(slots=True)
class _ChoiceText:
    context: str = ""  # raw text already released, for \b and lookbehinds
    pending: str = ""  # raw text held back: it could still be the start of a match


class StreamRewriter:
    """Redacts answer text across a stream of chunk events, per choice.

    Each choice holds back only the tail in which a match could still begin (see
    PrefixMatcher), at most STREAM_HOLD_LIMIT characters, extended back to the start
    of any complete match the cut would split. Held text is released, redacted, with
    the choice's finish_reason or by flush().
    """

    def __init__(self, spec: PolicySpec, endpoint: str) -> None:
        self._active = stream_needs_rewrite(spec, endpoint)
        self._redactions = spec.response_redactions
        self._text_key = "text" if endpoint == COMPLETIONS else "content"
        self._endpoint = endpoint
        self._choices: dict[int, _ChoiceText] = {}
        self._last_meta: dict[str, Any] = {}

    def on_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The event to send in place of `event` (the same object when nothing changed)."""
        if not self._active or not isinstance(event, dict):
            return event
        self._last_meta = {k: event[k] for k in ("id", "object", "created", "model") if k in event}
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices:
            return event
        new_choices = [self._rewrite_choice(c) for c in choices]
        if all(new is old for new, old in zip(new_choices, choices, strict=True)):
            return event
        return {**event, "choices": new_choices}

    def flush(self) -> list[dict[str, Any]]:
        """Synthetic chunks releasing text still held when the stream ended without finish_reason."""
        events = []
        for index in sorted(self._choices):
            text = self._release(index, "", final=True)
            if text:
                events.append({**self._last_meta, "choices": [self._synthetic_choice(index, text)]})
        self._choices.clear()
        return events

    def _rewrite_choice(self, choice: Any) -> Any:
        if not isinstance(choice, dict):
            return choice
        index = choice.get("index", 0)
        holder = choice if self._endpoint == COMPLETIONS else choice.get("delta")
        text = holder.get(self._text_key) if isinstance(holder, dict) else None
        finished = choice.get("finish_reason") is not None
        if not isinstance(text, str) and not (finished and index in self._choices):
            return choice
        released = self._release(index, text if isinstance(text, str) else "", final=finished)
        if released == text:
            return choice
        if self._endpoint == COMPLETIONS:
            return {**choice, "text": released}
        return {**choice, "delta": {**(holder or {}), "content": released}}

    def _release(self, index: int, text: str, *, final: bool) -> str:
        state = self._choices.setdefault(index, _ChoiceText())
        buffer = state.context + state.pending + text
        start = len(state.context)
        cut = len(buffer) if final else _release_point(self._redactions, buffer, start)
        released = _redact_span(self._redactions, buffer, start, cut)
        if final:
            del self._choices[index]
        else:
            state.context = buffer[max(0, cut - STREAM_CONTEXT_CHARS) : cut]
            state.pending = buffer[cut:]
        return released

    def _synthetic_choice(self, index: int, text: str) -> dict[str, Any]:
        if self._endpoint == COMPLETIONS:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": None}
        return {"index": index, "delta": {"content": text}, "finish_reason": None}


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
