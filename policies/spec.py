"""A policy's rules, built once from its stored content into an immutable, ready-to-use spec."""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from policies.limits import NO_LIMITS, Limits
from policies.partial_match import PrefixMatcher
from policies.patterns import Pattern, compile_pattern

DEFAULT_CONTENT: dict[str, Any] = {
    "system_context": "",
    "system_context_mode": "if_missing",
    "param_defaults": {},
    "param_overrides": {},
    "model_rules": [],
    "max_tokens_ceiling": None,
    "allowed_models": [],
    "model_aliases": {},
    "allowed_surfaces": [],
    "passthrough_paths": [],
    "embedding_default_model": "",
    "embedding_normalize_input": False,
    "user_field": "leave",
    "user_field_override": False,
    "blocked_patterns": [],
    "response_redactions": [],
    "annotate_responses": False,
    "annotation_extra": {},
    "audit_capture": "full",
    "audit_retention_days": None,
    "rpm_limit": None,
    "tpm_limit": None,
    "max_parallel_requests": None,
    "daily_budget_usd": None,
    "monthly_budget_usd": None,
}

SYSTEM_CONTEXT_MODES = ("if_missing", "prepend", "replace")
USER_FIELD_MODES = ("leave", "key_name", "client_ip")
AUDIT_CAPTURE_MODES = ("full", "metadata")
DEFAULT_REPLACEMENT = "[redacted]"

# Held text is analysed every event while it is shorter than this; a pattern that cannot be analysed
# (RE2-only syntax) holds this window.
STREAM_HOLD_LIMIT = 256
# A stream holds at most this many characters of one possible match; past it, it fails closed
# (settings.STREAM_REDACTION_HOLD_MAX in the proxy).
STREAM_HOLD_MAX = 8192


def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # Deep copy: later edits to the stored content must not leak into a built spec.
    return MappingProxyType(copy.deepcopy(dict(value)))


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Case-sensitive fnmatch glob as a compiled regex (use `.match`)."""
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True, slots=True)
class ModelRule:
    pattern: str
    defaults: Mapping[str, Any]
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class BlockedPattern:
    name: str
    regex: Pattern  # RE2: linear time, whatever the pattern and the text


@dataclass(frozen=True, slots=True)
class Redaction:
    regex: Pattern
    replacement: str
    # None when the pattern could not be analysed: streams then hold STREAM_HOLD_LIMIT characters.
    prefix: PrefixMatcher | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str
    version: int
    id: int | None = None
    system_context: str = ""
    system_context_mode: str = "if_missing"
    param_defaults: Mapping[str, Any] = field(default_factory=_empty_mapping)
    param_overrides: Mapping[str, Any] = field(default_factory=_empty_mapping)
    model_rules: tuple[ModelRule, ...] = ()
    max_tokens_ceiling: int | None = None
    allowed_models: tuple[str, ...] = ()
    model_aliases: Mapping[str, str] = field(default_factory=_empty_mapping)
    # Empty: every governed surface.
    allowed_surfaces: frozenset[str] = frozenset()
    passthrough_paths: tuple[str, ...] = ()
    embedding_default_model: str = ""
    embedding_normalize_input: bool = False
    user_field: str = "leave"
    user_field_override: bool = False
    blocked_patterns: tuple[BlockedPattern, ...] = ()
    response_redactions: tuple[Redaction, ...] = ()
    annotate_responses: bool = False
    annotation_extra: Mapping[str, Any] = field(default_factory=_empty_mapping)
    audit_capture: str = "full"
    audit_retention_days: int | None = None
    limits: Limits = NO_LIMITS  # enforced by the limiter, not the engine
    # One regex for all allowed globs: a single match per request instead of a loop.
    allowed_models_regex: re.Pattern[str] | None = field(init=False, default=None, repr=False, compare=False)
    passthrough_regex: re.Pattern[str] | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.allowed_models:
            joined = "|".join(fnmatch.translate(glob) for glob in self.allowed_models)
            object.__setattr__(self, "allowed_models_regex", re.compile(joined))
        if self.passthrough_paths:
            joined = "|".join(fnmatch.translate(glob) for glob in self.passthrough_paths)
            object.__setattr__(self, "passthrough_regex", re.compile(joined))

    def surface_allowed(self, group: str) -> bool:
        return not self.allowed_surfaces or group in self.allowed_surfaces

    def passthrough_allowed(self, path: str) -> bool:
        """Whether a path no surface governs may be forwarded (matched whole, `*` spans segments)."""
        return self.passthrough_regex is not None and self.passthrough_regex.match(path) is not None

    @classmethod
    def from_content(cls, *, name: str, version: int, content: dict[str, Any], id: int | None = None) -> PolicySpec:
        """Build a spec from validated content; missing (or null) keys take their defaults."""

        def get(key: str) -> Any:
            value = content.get(key)
            return DEFAULT_CONTENT[key] if value is None else value

        return cls(
            name=name,
            version=version,
            id=id,
            system_context=get("system_context"),
            system_context_mode=get("system_context_mode"),
            param_defaults=_frozen_mapping(get("param_defaults")),
            param_overrides=_frozen_mapping(get("param_overrides")),
            model_rules=tuple(
                ModelRule(
                    pattern=rule["pattern"],
                    defaults=_frozen_mapping(rule.get("defaults") or {}),
                    regex=compile_glob(rule["pattern"]),
                )
                for rule in get("model_rules")
            ),
            max_tokens_ceiling=get("max_tokens_ceiling"),
            allowed_models=tuple(get("allowed_models")),
            model_aliases=_frozen_mapping(get("model_aliases")),
            allowed_surfaces=frozenset(get("allowed_surfaces")),
            passthrough_paths=tuple(get("passthrough_paths")),
            embedding_default_model=get("embedding_default_model"),
            embedding_normalize_input=get("embedding_normalize_input"),
            user_field=get("user_field"),
            user_field_override=get("user_field_override"),
            blocked_patterns=tuple(
                BlockedPattern(name=rule["name"], regex=compile_pattern(rule["pattern"]))
                for rule in get("blocked_patterns")
            ),
            response_redactions=tuple(_redaction(rule) for rule in get("response_redactions")),
            annotate_responses=get("annotate_responses"),
            annotation_extra=_frozen_mapping(get("annotation_extra")),
            audit_capture=get("audit_capture"),
            audit_retention_days=get("audit_retention_days"),
            limits=Limits.from_values(content),
        )


def _redaction(rule: Mapping[str, Any]) -> Redaction:
    replacement = rule.get("replacement")
    return Redaction(
        regex=compile_pattern(rule["pattern"]),
        replacement=DEFAULT_REPLACEMENT if replacement is None else replacement,
        prefix=PrefixMatcher.build(rule["pattern"]),
    )


PASS_THROUGH = PolicySpec.from_content(name="", version=0, content={})
