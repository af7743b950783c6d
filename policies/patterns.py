"""Operator-written regular expressions, compiled with RE2: matching runs in time linear in the text.

Python's `re` backtracks: a pattern like `(a+)+$` takes exponential time on "aaaa…!", and one such
blocked pattern or redaction (hit by model output) would freeze a worker. RE2 never backtracks; the
price is that it lacks backreferences and lookaround, which validation refuses by name.
"""

from __future__ import annotations

import re

import re2

MAX_PROGRAM_MEMORY = 8 << 20  # bytes RE2 may use for one compiled pattern (its default; said here on purpose)

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is reported to the operator, not logged by the C++ library
_OPTIONS.max_mem = MAX_PROGRAM_MEMORY

Pattern = re2._Regexp

# Features Python's `re` has and RE2 refuses, with what an operator should be told about each.
_UNSUPPORTED = (
    (re.compile(r"\\[1-9]|\(\?P=|\\g<"), "a backreference (\\1, (?P=name))"),
    (re.compile(r"\(\?<?[=!]"), "a lookahead or lookbehind ((?=, (?!, (?<=, (?<!)"),
    (re.compile(r"\(\?>|[*+?}][+]"), "an atomic group or possessive quantifier"),
    (re.compile(r"\(\?\(\d+\)"), "a conditional group"),
)


class PatternError(ValueError):
    """A pattern RE2 cannot run; the message says why in an operator's terms."""


def compile_pattern(pattern: str) -> Pattern:
    """The pattern compiled for linear-time matching; PatternError if it cannot be."""
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        raise PatternError(_explain(pattern, exc)) from None


def _explain(pattern: str, exc: Exception) -> str:
    for feature, name in _UNSUPPORTED:
        if feature.search(pattern):
            return (
                f"uses {name}, which aiproxy does not run: patterns are matched with RE2, in time linear "
                "in the text, so that no pattern can stall a worker"
            )
    detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    return f"is not a valid regular expression: {detail}"
