"""The policy engine: pure functions applying a PolicySpec to request and response dicts, through a surface adapter."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from policies import surfaces
from policies.spec import PolicySpec, Redaction
from policies.surfaces import Surface, surface_for

# Endpoint names, as the audit record and the tests know them; each names one surface adapter.
CHAT = surfaces.CHAT.name
COMPLETIONS = surfaces.COMPLETIONS.name
RESPONSES = surfaces.RESPONSES.name
MESSAGES = surfaces.MESSAGES.name
MESSAGES_COUNT_TOKENS = surfaces.MESSAGES_COUNT_TOKENS.name
EMBEDDINGS = surfaces.EMBEDDINGS.name
MODERATIONS = surfaces.MODERATIONS.name
IMAGES = surfaces.IMAGES.name
AUDIO_SPEECH = surfaces.AUDIO_SPEECH.name
AUDIO_TRANSCRIPTIONS = surfaces.AUDIO_TRANSCRIPTIONS.name
AUDIO_TRANSLATIONS = surfaces.AUDIO_TRANSLATIONS.name
MODELS = surfaces.MODELS.name
OTHER = surfaces.OTHER.name


@dataclass(frozen=True, slots=True)
class RequestContext:
    key_name: str
    client_ip: str | None = None


@dataclass(slots=True)
class RequestPlan:
    body: dict[str, Any]
    modifications: list[str]
    original_model: str | None
    upstream_model: str | None


@dataclass(frozen=True, slots=True)
class ResponseContext:
    original_model: str | None
    modifications: tuple[str, ...]
    processing_ms: float


class PolicyRejection(Exception):
    """A request the policy refuses; the proxy turns it into an OpenAI-shaped error."""

    def __init__(self, *, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param


# --- requests ---------------------------------------------------------------------------


def apply_request(
    spec: PolicySpec, surface: str | Surface, body: dict[str, Any], context: RequestContext
) -> RequestPlan:
    """Return the body to forward upstream and what the policy changed; raise PolicyRejection.

    `surface` is the adapter (or its endpoint name) that knows where this dialect keeps each
    thing the rules touch. The input is never mutated. The returned body is a new dict, but
    nested values the policy did not touch are shared with the input: copy them before changing them.
    """
    adapter = surface_for(surface)
    if not adapter.names_model or not isinstance(body, dict):
        model = body.get("model") if isinstance(body, dict) else None
        return RequestPlan(body=body, modifications=[], original_model=model, upstream_model=model)

    out = dict(body)
    mods: list[str] = []
    original_model = _apply_model(spec, out, mods)
    _check_blocked(spec, adapter, out)
    if adapter.has_system_prompt and spec.system_context:
        if adapter.add_system_context(out, spec.system_context, spec.system_context_mode):
            mods.append(f"system_context:{spec.system_context_mode}")
    if adapter.takes_params:
        _apply_params(spec, adapter, out, mods)
        _apply_ceiling(spec, adapter, out, mods)
    if adapter.sets_user:
        _apply_user_field(spec, adapter, out, mods, context)
    if adapter is surfaces.EMBEDDINGS:
        _apply_embedding_rules(spec, out, mods)
    upstream = out.get("model")
    return RequestPlan(
        body=out,
        modifications=mods,
        original_model=original_model,
        upstream_model=upstream if isinstance(upstream, str) else None,
    )


def model_allowed(spec: PolicySpec, model: str) -> bool:
    """Whether a key under this policy may ask for `model` (a client-facing name).

    An alias is always allowed, whatever its target: the operator defined it, so it is
    a deliberate grant. Otherwise the name must match one of allowed_models (when set).
    The alias target is not checked against allowed_models, which lets an operator
    expose an upstream model only through an alias.
    """
    if model in spec.model_aliases or spec.allowed_models_regex is None:
        return True
    if "," in model:
        # LiteLLM reads "a,b" as a request to several models, and "gpt-4o*" would match it.
        return False
    return spec.allowed_models_regex.match(model) is not None


def _apply_model(spec: PolicySpec, body: dict[str, Any], mods: list[str]) -> str | None:
    model = body.get("model")
    if model is None or model == "":
        return None  # nothing asked for yet: an embeddings default may fill it in later
    if not isinstance(model, str) or not model_allowed(spec, model):
        raise PolicyRejection(
            status=403,
            code="model_not_allowed",
            message=f"The model {json.dumps(model)} is not allowed for this API key.",
            param="model",
        )
    target = spec.model_aliases.get(model)
    if target is not None and target != model:
        body["model"] = target
        mods.append(f"alias:{model}->{target}")
    return model


def _check_blocked(spec: PolicySpec, adapter: Surface, body: dict[str, Any]) -> None:
    if not spec.blocked_patterns:
        return
    for param, text in adapter.request_texts(body):
        for rule in spec.blocked_patterns:
            if rule.regex.search(text):
                # The message names the rule, never the matched text: it may be the secret.
                raise PolicyRejection(
                    status=400,
                    code="content_policy_violation",
                    message=f'The request was blocked by the content policy rule "{rule.name}".',
                    param=param,
                )


def _apply_params(spec: PolicySpec, adapter: Surface, body: dict[str, Any], mods: list[str]) -> None:
    # A parameter sent as null counts as not set, as it does for OpenAI.
    model = body.get("model")
    if spec.model_rules and isinstance(model, str):
        for rule in spec.model_rules:
            if not rule.regex.match(model):
                continue
            for key, value in _surface_params(adapter, rule.defaults):
                # Checking the body also makes earlier rules win over later ones.
                if body.get(key) is None:
                    body[key] = _fresh(value)
                    mods.append(f"model_rule:{rule.pattern}:{key}")
    for key, value in _surface_params(adapter, spec.param_defaults):
        if body.get(key) is None:
            body[key] = _fresh(value)
            mods.append(f"default:{key}")
    for key, value in _surface_params(adapter, spec.param_overrides):
        if key not in body or body[key] != value:
            body[key] = _fresh(value)
            mods.append(f"override:{key}")


def _surface_params(adapter: Surface, params: Any) -> Iterable[tuple[str, Any]]:
    """A policy's parameters renamed for the surface; the ones that mean nothing there are left out."""
    if not adapter.renames_params:
        return params.items()  # chat and completions take every parameter as named (the hot path)
    return (mapped for key, value in params.items() if (mapped := adapter.param(key, value)) is not None)


def _apply_ceiling(spec: PolicySpec, adapter: Surface, body: dict[str, Any], mods: list[str]) -> None:
    # Only clamps what the client sent; a param_defaults entry covers clients that send nothing.
    ceiling = spec.max_tokens_ceiling
    if ceiling is None:
        return
    for key in adapter.token_limit_params:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
            body[key] = ceiling
            mods.append(f"ceiling:{key}:{value}->{ceiling}")


def _apply_user_field(
    spec: PolicySpec, adapter: Surface, body: dict[str, Any], mods: list[str], context: RequestContext
) -> None:
    if spec.user_field == "leave":
        return
    value = context.key_name if spec.user_field == "key_name" else context.client_ip
    if value and adapter.set_user(body, value, override=spec.user_field_override):
        mods.append(f"user:{spec.user_field}")


def _apply_embedding_rules(spec: PolicySpec, body: dict[str, Any], mods: list[str]) -> None:
    if spec.embedding_default_model and not body.get("model"):
        # The operator's own default: resolved through aliases, not checked against allowed_models.
        default = spec.embedding_default_model
        body["model"] = spec.model_aliases.get(default, default)
        mods.append("embedding_default_model")
    if spec.embedding_normalize_input:
        normalized = _normalize_input(body.get("input"))
        if normalized is not None and normalized != body.get("input"):
            body["input"] = normalized
            mods.append("embedding_normalize_input")


def _normalize_input(value: Any) -> str | list[Any] | None:
    # Token-id inputs (lists of ints, lists of lists) pass through untouched.
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list):
        return [" ".join(v.split()) if isinstance(v, str) else v for v in value]
    return None


def _fresh(value: Any) -> Any:
    # The spec's values are shared by every request: hand out copies of containers.
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return copy.deepcopy(value)


# --- models list ------------------------------------------------------------------------


def filter_models_list(spec: PolicySpec, body: dict[str, Any]) -> dict[str, Any]:
    """Restrict a GET /v1/models answer to what the key may use, plus one entry per alias."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or (not spec.allowed_models and not spec.model_aliases):
        return body
    by_id = {e["id"]: e for e in data if isinstance(e, dict) and isinstance(e.get("id"), str)}
    # An upstream model named like an alias is shadowed: requests for it go to the target.
    kept = [
        entry
        for model_id, entry in by_id.items()
        if model_id not in spec.model_aliases and model_allowed(spec, model_id)
    ]
    for alias, target in spec.model_aliases.items():
        entry = by_id.get(target)
        if entry is None:
            kept.append({"id": alias, "object": "model", "owned_by": "aiproxy"})
        else:
            kept.append({**copy.deepcopy(entry), "id": alias})
    return {**body, "data": kept}


# --- responses --------------------------------------------------------------------------


def apply_response(
    spec: PolicySpec, surface: str | Surface, body: dict[str, Any], context: ResponseContext
) -> dict[str, Any]:
    """Redact the answer text and add annotations; returns a new dict when anything changed."""
    adapter = surface_for(surface)
    if not adapter.annotates or not isinstance(body, dict):
        return body
    if spec.response_redactions:
        redactions = spec.response_redactions
        body = adapter.redact_response(body, lambda text: redact_text(redactions, text))
    if spec.annotate_responses:
        body = _annotate(spec, body, context)
    return body


def redact_text(redactions: tuple[Redaction, ...], text: str) -> str:
    """Apply each redaction in order, each to the previous one's output."""
    for redaction in redactions:
        text = redaction.regex.sub(redaction.replacement, text)
    return text


def _annotate(spec: PolicySpec, body: dict[str, Any], context: ResponseContext) -> dict[str, Any]:
    # Validation forbids extra keys that clash; listing ours last keeps them authoritative anyway.
    info = {
        **{key: _fresh(value) for key, value in spec.annotation_extra.items()},
        "policy": spec.name,
        "policy_version": spec.version,
        "original_model": context.original_model,
        "modifications": list(context.modifications),
        "processing_ms": context.processing_ms,
    }
    out = {**body, "_proxy_info": info}
    usage = body.get("usage")
    if isinstance(usage, dict):
        out["usage"] = {**usage, "aiproxy_processing_ms": context.processing_ms}
    return out
