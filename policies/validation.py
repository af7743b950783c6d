"""Checks a policy's content before it is saved, with messages an operator can act on."""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from policies.patterns import Pattern, PatternError, compile_pattern
from policies.spec import (
    AUDIT_CAPTURE_MODES,
    DEFAULT_CONTENT,
    SYSTEM_CONTEXT_MODES,
    USER_FIELD_MODES,
)
from policies.surfaces import GOVERNED

# Errors about the content as a whole, as Django names them (NON_FIELD_ERRORS).
NON_FIELD = "__all__"
MAX_NAME_LENGTH = 200
MAX_REGEX_LENGTH = 1000
# A default or override may change how a request is answered, never what is asked.
FORBIDDEN_PARAMS = ("model", "messages", "prompt", "input", "stream")
RESERVED_ANNOTATION_KEYS = ("policy", "policy_version", "original_model", "modifications", "processing_ms")

Messages = list[str]


def validate_policy_content(content: dict[str, Any]) -> dict[str, list[str]]:
    """Field name -> problems found in that field; an empty dict means the content is valid."""
    if not isinstance(content, dict):
        return {NON_FIELD: ["Policy content must be a JSON object."]}
    errors: dict[str, list[str]] = {}
    for key, value in content.items():
        check = CHECKS.get(key)
        messages = _unknown_key(key) if check is None else check(key, value)
        if messages:
            errors[key] = messages
    return errors


def _show(value: Any) -> str:
    # Operators write JSON: quote values the way they typed them (true, null, "x").
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _unknown_key(key: Any) -> Messages:
    close = difflib.get_close_matches(str(key), DEFAULT_CONTENT, n=1)
    hint = f' Did you mean "{close[0]}"?' if close else ""
    return [f'"{key}" is not a policy setting.{hint}']


# --- scalar fields -----------------------------------------------------------------------


def _string(path: str, value: Any) -> Messages:
    return [] if isinstance(value, str) else [f"{path} must be a string."]


def _boolean(path: str, value: Any) -> Messages:
    return [] if isinstance(value, bool) else [f"{path} must be true or false."]


def _positive_int_or_null(path: str, value: Any) -> Messages:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return []
    return [f"{path} must be a positive integer or null (got {_show(value)})."]


def _usd_or_null(path: str, value: Any) -> Messages:
    """A budget: null, or a non-negative amount (a number, or its decimal string as versions keep it)."""
    if value is None:
        return []
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            amount = None
        if amount is not None and amount.is_finite() and amount >= 0:
            return []
    return [f"{path} must be an amount in USD of 0 or more, or null (got {_show(value)})."]


def _choice(*allowed: str) -> Callable[[str, Any], Messages]:
    def check(path: str, value: Any) -> Messages:
        if value in allowed:
            return []
        options = ", ".join(f'"{a}"' for a in allowed)
        return [f"{path} must be one of {options} (got {_show(value)})."]

    return check


def _model_name_or_empty(path: str, value: Any) -> Messages:
    if value == "":
        return []
    problem = _name_problem(value)
    return [f"{path} {problem}."] if problem else []


# --- names and globs ---------------------------------------------------------------------


def _name_problem(value: Any) -> str | None:
    """What is wrong with a model name, or None."""
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "must not be empty"
    if value != value.strip():
        return "must not start or end with whitespace"
    if len(value) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "must not contain control characters"
    return None


def _glob_problem(value: Any) -> str | None:
    """What is wrong with a model glob, or None. Model names may contain '/'."""
    problem = _name_problem(value)
    if problem:
        return problem
    i = 0
    while i < len(value):
        if value[i] == "]":
            return "has a ']' without a matching '['"
        if value[i] == "[":
            # fnmatch allows "]" first in a set ("[]a]", "[!]a]") as a literal member.
            j = i + 1
            j += value[j : j + 1] == "!"
            j += value[j : j + 1] == "]"
            close = value.find("]", j)
            if close == -1:
                return "has a '[' that is never closed"
            i = close
        i += 1
    return None


def _globs(path: str, value: Any) -> Messages:
    if not isinstance(value, list):
        return [f"{path} must be a list of model name patterns."]
    return [f"{path}[{i}] {problem}." for i, glob in enumerate(value) if (problem := _glob_problem(glob))]


def _aliases(path: str, value: Any) -> Messages:
    if not isinstance(value, dict):
        return [f"{path} must be an object mapping alias names to upstream model names."]
    messages = []
    for alias, target in value.items():
        if problem := _name_problem(alias):
            messages.append(f"{path}: alias name {_show(alias)} {problem}.")
        if problem := _name_problem(target):
            messages.append(f"{path}[{_show(alias)}] target {problem}.")
    return messages or _alias_chains(path, value)


def _alias_chains(path: str, aliases: dict[str, Any]) -> Messages:
    # Aliases resolve once; a target that is itself an alias would silently not be followed.
    return [
        f"{path}[{_show(alias)}] points to {_show(target)}, which is itself an alias: "
        "aliases are resolved once, point it at the upstream model directly."
        for alias, target in aliases.items()
        if target in aliases and target != alias
    ]


def _surfaces(path: str, value: Any) -> Messages:
    if not isinstance(value, list):
        return [f"{path} must be a list of surface names."]
    known = ", ".join(f'"{name}"' for name in GOVERNED)
    return [
        f"{path}[{i}] {_show(name)} is not a surface; choose from {known}."
        for i, name in enumerate(value)
        if name not in GOVERNED
    ]


def _passthrough_paths(path: str, value: Any) -> Messages:
    if not isinstance(value, list):
        return [f'{path} must be a list of path patterns, e.g. ["/v1/files", "/v1/files/*"].']
    messages = []
    for i, pattern in enumerate(value):
        item = f"{path}[{i}]"
        if (problem := _glob_problem(pattern)) is not None:
            messages.append(f"{item} {problem}.")
        elif not pattern.startswith("/v1/") or len(pattern) == len("/v1/"):
            messages.append(f'{item} must be a path under /v1/, such as "/v1/files" (got {_show(pattern)}).')
        elif any(c.isspace() or c in "?#%" for c in pattern):
            messages.append(f"{item} must be a plain path: no spaces, query, fragment or percent-encoding.")
    return messages


# --- parameters --------------------------------------------------------------------------


def _params(path: str, value: Any) -> Messages:
    if not isinstance(value, dict):
        return [f"{path} must be an object of request parameters."]
    messages = []
    for key in value:
        if not isinstance(key, str) or not key.strip():
            messages.append(f"{path} has an empty parameter name.")
        elif key in FORBIDDEN_PARAMS:
            messages.append(
                f"{path}.{key} cannot be set by a policy: defaults and overrides may change "
                "how a request is answered, not what is asked."
            )
    return messages


def _model_rules(path: str, value: Any) -> Messages:
    if not isinstance(value, list):
        return [f'{path} must be a list of {{"pattern": ..., "defaults": {{...}}}} objects.']
    messages = []
    for i, rule in enumerate(value):
        item = f"{path}[{i}]"
        if not isinstance(rule, dict):
            messages.append(f'{item} must be an object with "pattern" and "defaults".')
            continue
        messages += _unexpected_keys(item, rule, ("pattern", "defaults"))
        if problem := _glob_problem(rule.get("pattern")):
            messages.append(f"{item}.pattern {problem}.")
        messages += _params(f"{item}.defaults", rule.get("defaults"))
    return messages


def _unexpected_keys(path: str, item: dict[str, Any], allowed: tuple[str, ...]) -> Messages:
    expected = ", ".join(f'"{a}"' for a in allowed)
    return [f'{path} has an unexpected key "{key}" (expected {expected}).' for key in item if key not in allowed]


# --- regular expressions -----------------------------------------------------------------


def _compile(path: str, value: Any) -> tuple[Pattern | None, Messages]:
    if not isinstance(value, str) or not value:
        return None, [f"{path} must be a non-empty regular expression."]
    if len(value) > MAX_REGEX_LENGTH:
        return None, [f"{path} must be at most {MAX_REGEX_LENGTH} characters."]
    try:
        regex = compile_pattern(value)
    except PatternError as exc:
        return None, [f"{path} {exc}."]
    if regex.match(""):
        return None, [f"{path} matches empty text, so it would match everywhere."]
    return regex, []


def _blocked_patterns(path: str, value: Any) -> Messages:
    if not isinstance(value, list):
        return [f'{path} must be a list of {{"name": ..., "pattern": ...}} objects.']
    messages = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(value):
        item = f"{path}[{i}]"
        if not isinstance(rule, dict):
            messages.append(f'{item} must be an object with "name" and "pattern".')
            continue
        messages += _unexpected_keys(item, rule, ("name", "pattern"))
        name = rule.get("name")
        if not isinstance(name, str) or not name.strip():
            messages.append(f"{item}.name must be a non-empty string: rejections quote it.")
        elif name in seen:
            messages.append(f"{item}.name {_show(name)} is already used by {path}[{seen[name]}].")
        else:
            seen[name] = i
        messages += _compile(f"{item}.pattern", rule.get("pattern"))[1]
    return messages


def _response_redactions(path: str, value: Any) -> Messages:
    if not isinstance(value, list):
        return [f'{path} must be a list of {{"pattern": ..., "replacement": ...}} objects.']
    messages = []
    for i, rule in enumerate(value):
        item = f"{path}[{i}]"
        if not isinstance(rule, dict):
            messages.append(f'{item} must be an object with "pattern" and "replacement".')
            continue
        messages += _unexpected_keys(item, rule, ("pattern", "replacement"))
        regex, problems = _compile(f"{item}.pattern", rule.get("pattern"))
        messages += problems
        replacement = rule.get("replacement", "")
        if not isinstance(replacement, str):
            messages.append(f"{item}.replacement must be a string.")
        elif regex is not None:
            messages += _replacement_problems(f"{item}.replacement", regex, replacement)
    return messages


def _replacement_problems(path: str, regex: Pattern, replacement: str) -> Messages:
    # Group references (\1, \g<name>) only fail when a match happens: try the template
    # against a stand-in pattern with the same groups, which matches empty text.
    names = {number: name for name, number in regex.groupindex.items()}
    stand_in = "".join(f"(?P<{names[n]}>)" if n in names else "()" for n in range(1, regex.groups + 1))
    try:
        re.sub(stand_in, replacement, "", count=1)
    except (re.error, IndexError) as exc:
        return [f"{path} is not a valid replacement: {exc}"]
    return []


# --- annotations -------------------------------------------------------------------------


def _annotation_extra(path: str, value: Any) -> Messages:
    if not isinstance(value, dict):
        return [f"{path} must be an object."]
    return [
        f"{path}.{key} clashes with a key aiproxy sets itself; reserved: " + ", ".join(RESERVED_ANNOTATION_KEYS) + "."
        for key in value
        if key in RESERVED_ANNOTATION_KEYS
    ]


CHECKS: dict[str, Callable[[str, Any], Messages]] = {
    "system_context": _string,
    "system_context_mode": _choice(*SYSTEM_CONTEXT_MODES),
    "param_defaults": _params,
    "param_overrides": _params,
    "model_rules": _model_rules,
    "max_tokens_ceiling": _positive_int_or_null,
    "allowed_models": _globs,
    "model_aliases": _aliases,
    "allowed_surfaces": _surfaces,
    "passthrough_paths": _passthrough_paths,
    "embedding_default_model": _model_name_or_empty,
    "embedding_normalize_input": _boolean,
    "user_field": _choice(*USER_FIELD_MODES),
    "user_field_override": _boolean,
    "blocked_patterns": _blocked_patterns,
    "response_redactions": _response_redactions,
    "annotate_responses": _boolean,
    "annotation_extra": _annotation_extra,
    "audit_capture": _choice(*AUDIT_CAPTURE_MODES),
    "audit_retention_days": _positive_int_or_null,
    "rpm_limit": _positive_int_or_null,
    "tpm_limit": _positive_int_or_null,
    "max_parallel_requests": _positive_int_or_null,
    "daily_budget_usd": _usd_or_null,
    "monthly_budget_usd": _usd_or_null,
}
