"""Partial regex matching: where a text could still grow into a match (stream redactions)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Any

# --- partial matching, for streams ----------------------------------------------------
#
# A stream may only send text that no redaction match can still begin in. Python's `re`
# cannot say whether a text is the beginning of a match ("partial matching"), so we walk
# the pattern's parse tree ourselves over the held text. The walk over-approximates:
# anything it does not model exactly (lookarounds, anchors, backreferences, odd case
# folding) counts as "might match", which only ever holds text longer, never leaks it.

# Node kinds of our own small tree, converted once from CPython's parse tree.
_CHAR, _IN, _SEQ, _BRANCH, _REPEAT, _RUN, _ZERO_WIDTH, _ANY_TEXT = range(8)
_RE2_ONLY = re.compile(r"\[:|\\[pPQECz]")
# Character tests one walk may make before it gives up and holds its whole window.
_WALK_BUDGET = 20_000


class PrefixMatcher:
    """Finds the earliest position from which a text could still grow into a match."""

    __slots__ = ("_tree",)

    def __init__(self, tree: tuple[Any, ...]) -> None:
        self._tree = tree

    @classmethod
    def build(cls, pattern: str) -> PrefixMatcher | None:
        """None when the pattern cannot be analysed; callers then hold a fixed window.

        Matching runs in RE2 (policies/patterns.py); the analysis reads Python's parse of the same
        pattern, which agrees on the syntax the two share. Syntax only RE2 reads (\\p{…} classes,
        [[:alpha:]], \\Q…\\E, \\C, \\z) could parse differently here, so it is not analysed.
        """
        if _RE2_ONLY.search(pattern):
            return None
        try:
            from re import _constants, _parser  # private, but stable for many releases

            parsed = _parser.parse(pattern, 0)
            return cls(_convert(parsed, parsed.state.flags, _constants.MAXREPEAT))
        except Exception:  # any surprise just means "no analysis"
            return None

    def open_start(self, text: str, first: int) -> int | None:
        """Smallest i >= first such that text[i:] could be the start of an unfinished match."""
        if first >= len(text):
            return None
        walk = _Walk(text)
        # Linear in the text walked, with room for a pattern's branches at each position.
        walk.budget = max(_WALK_BUDGET, 16 * (len(text) - first))
        # Each state maps a position in text to the earliest start that reaches it: two
        # paths at the same point of the pattern and the text have the same future.
        try:
            _walk(walk, self._tree, {i: i for i in range(first, len(text))})
        except _OverBudget:
            return first
        return walk.open_start


def _convert(items: Any, flags: int, maxrepeat: int) -> tuple[Any, ...]:
    """CPython's parse tree as (kind, ...) tuples, with case-insensitivity resolved per node."""
    nodes = []
    for op, av in items:
        name = str(op)
        ignorecase = bool(flags & re.IGNORECASE)
        if name == "LITERAL":
            nodes.append((_CHAR, chr(av), ignorecase))
        elif name == "NOT_LITERAL":
            nodes.append((_IN, True, (("LITERAL", chr(av)),), ignorecase))
        elif name == "ANY":
            nodes.append((_IN, True, () if flags & re.DOTALL else (("LITERAL", "\n"),), False))
        elif name == "IN":
            nodes.append(_convert_set(av, ignorecase))
        elif name == "SUBPATTERN":
            _group, add_flags, del_flags, sub = av
            nodes.append(_convert(sub, (flags | add_flags) & ~del_flags, maxrepeat))
        elif name == "ATOMIC_GROUP":
            nodes.append(_convert(av, flags, maxrepeat))
        elif name == "BRANCH":
            alternatives = tuple(_convert(alt, flags, maxrepeat) for alt in av[1])
            nodes.append((_BRANCH, alternatives))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, item = av
            item = _convert(item, flags, maxrepeat)
            if high == maxrepeat and len(item[1]) == 1 and item[1][0][0] in (_CHAR, _IN):
                # "x+", "[a-z]{2,}": the common case, walked in one pass instead of once per repetition.
                nodes.append((_RUN, low, item[1][0]))
            else:
                nodes.append((_REPEAT, low, None if high == maxrepeat else high, item))
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            nodes.append((_ZERO_WIDTH,))
        else:  # backreferences, conditionals, anything newer than this code
            nodes.append((_ANY_TEXT,))
    return (_SEQ, tuple(nodes))


def _convert_set(items: Any, ignorecase: bool) -> tuple[Any, ...]:
    members = []
    negated = False
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negated = True
        elif name == "LITERAL":
            members.append(("LITERAL", chr(av)))
        elif name in ("RANGE", "CATEGORY"):
            members.append((name, av if name == "RANGE" else str(av)))
        else:
            members.append(("UNKNOWN", None))
    return (_IN, negated, tuple(members), ignorecase)


class _OverBudget(Exception):
    pass


class _Walk:
    """One walk over a text; remembers the earliest start of a path that ran out of text."""

    __slots__ = ("text", "end", "open_start", "budget")

    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.open_start: int | None = None
        self.budget = _WALK_BUDGET

    def test(self, node: tuple[Any, ...], pos: int) -> bool:
        self.budget -= 1
        if self.budget < 0:
            raise _OverBudget
        return _might_match(node, self.text[pos])

    def wants_more(self, start: int) -> None:
        if self.open_start is None or start < self.open_start:
            self.open_start = start


def _walk(walk: _Walk, node: tuple[Any, ...], states: dict[int, int]) -> dict[int, int]:
    kind = node[0]
    if kind == _SEQ:
        for child in node[1]:
            if not states:
                break
            states = _walk(walk, child, states)
        return states
    if kind in (_CHAR, _IN):
        return _walk_character(walk, node, states)
    if kind == _BRANCH:
        out: dict[int, int] = {}
        for alternative in node[1]:
            _merge(out, _walk(walk, alternative, states))
        return out
    if kind == _REPEAT:
        return _walk_repeat(walk, node, states)
    if kind == _RUN:
        return _walk_run(walk, node, states)
    if kind == _ZERO_WIDTH:
        # Assumed to hold; at the end of the text its answer may depend on what comes next.
        if walk.end in states:
            walk.wants_more(states[walk.end])
        return states
    # _ANY_TEXT: may match any text of any length, including text not yet received.
    earliest = min(states.values())
    walk.wants_more(earliest)
    return {pos: earliest for pos in range(min(states), walk.end + 1)}


def _walk_character(walk: _Walk, node: tuple[Any, ...], states: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for pos, start in states.items():
        if pos == walk.end:
            walk.wants_more(start)
        elif walk.test(node, pos):
            known = out.get(pos + 1)
            if known is None or start < known:
                out[pos + 1] = start
    return out


def _walk_run(walk: _Walk, node: tuple[Any, ...], states: dict[int, int]) -> dict[int, int]:
    """An unbounded repeat of one character ("x{low,}") in a single left-to-right pass."""
    _kind, low, char = node
    out: dict[int, int] = {}
    waiting: deque[tuple[int, int]] = deque()  # (position, start) with fewer than `low` characters
    ready: int | None = None  # earliest start with at least `low` characters behind it
    pos = min(states)
    while True:
        if pos in states:
            waiting.append((pos, states[pos]))
        while waiting and waiting[0][0] + low <= pos:
            start = waiting.popleft()[1]
            ready = start if ready is None else min(ready, start)
        if ready is not None:
            _merge(out, {pos: ready})
        if pos == walk.end:
            alive = [start for _, start in waiting] + ([] if ready is None else [ready])
            if alive:
                walk.wants_more(min(alive))
            return out
        if not walk.test(char, pos):
            # Every path in the run stops here; resume at the next state, if any.
            waiting.clear()
            ready = None
            later = [p for p in states if p > pos]
            if not later:
                return out
            pos = min(later)
            continue
        pos += 1


def _walk_repeat(walk: _Walk, node: tuple[Any, ...], states: dict[int, int]) -> dict[int, int]:
    _kind, low, high, item = node
    reached: dict[int, int] = dict(states) if low == 0 else {}
    current, count = states, 0
    while current and (high is None or count < high):
        following = _walk(walk, item, current)
        count += 1
        if following == current:
            # A fixed point: more repetitions change nothing (this also ends huge minimums).
            _merge(reached, following)
            break
        if count >= low:
            improved = _merge(reached, following)
            # Without an upper bound, a state seen before has the same future: skip it.
            following = improved if high is None else following
        current = following
    return reached


def _merge(into: dict[int, int], states: dict[int, int]) -> dict[int, int]:
    """Merge keeping the earliest start per position; return the entries that changed."""
    changed = {}
    for pos, start in states.items():
        known = into.get(pos)
        if known is None or start < known:
            into[pos] = changed[pos] = start
    return changed


def _might_match(node: tuple[Any, ...], char: str) -> bool:
    """Whether a one-character node could match `char` (True when unsure)."""
    if node[0] == _CHAR:
        return _same_char(char, node[1], node[2])
    _kind, negated, members, ignorecase = node
    if negated:
        # Only a member that surely matches rules a character out.
        return not any(_member_test(m, char, ignorecase, surely=True) for m in members)
    return any(_member_test(m, char, ignorecase, surely=False) for m in members)


def _same_char(char: str, literal: str, ignorecase: bool) -> bool:
    if char == literal:
        return True
    return ignorecase and (
        char.lower() == literal.lower() or char.upper() == literal.upper() or char.casefold() == literal.casefold()
    )


def _member_test(member: tuple[str, Any], char: str, ignorecase: bool, *, surely: bool) -> bool:
    kind, value = member
    if kind == "LITERAL":
        return char == value if surely else _same_char(char, value, ignorecase)
    if kind == "RANGE":
        low, high = value
        if low <= ord(char) <= high:
            return True
        if surely or not ignorecase:
            return False
        # Case folding outside ASCII has surprises (e.g. the Kelvin sign): assume it matches.
        return not char.isascii() or any(low <= ord(v) <= high for v in (char.lower(), char.upper()))
    if kind == "CATEGORY" and value in _CATEGORIES:
        maybe, sure = _CATEGORIES[value]
        return sure(char) if surely else maybe(char)
    return not surely


def _is_digit(char: str) -> bool:
    return char.isdecimal()


def _is_ascii_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_space(char: str) -> bool:
    return char.isspace()


def _is_ascii_space(char: str) -> bool:
    return char in " \t\n\r\f\v"


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _is_ascii_word(char: str) -> bool:
    return char.isascii() and _is_word(char)


def _is_newline(char: str) -> bool:
    return char == "\n"


def _negate(test: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda char: not test(char)


# Per class: (might match, surely matches). The Unicode meaning is the wider one, the
# ASCII one (re.ASCII) the narrower: using each on its side is right under either flag.
_CATEGORIES: dict[str, tuple[Callable[[str], bool], Callable[[str], bool]]] = {
    "CATEGORY_DIGIT": (_is_digit, _is_ascii_digit),
    "CATEGORY_NOT_DIGIT": (_negate(_is_ascii_digit), _negate(_is_digit)),
    "CATEGORY_SPACE": (_is_space, _is_ascii_space),
    "CATEGORY_NOT_SPACE": (_negate(_is_ascii_space), _negate(_is_space)),
    "CATEGORY_WORD": (_is_word, _is_ascii_word),
    "CATEGORY_NOT_WORD": (_negate(_is_ascii_word), _negate(_is_word)),
    "CATEGORY_LINEBREAK": (_is_newline, _is_newline),
    "CATEGORY_NOT_LINEBREAK": (_negate(_is_newline), _negate(_is_newline)),
}
