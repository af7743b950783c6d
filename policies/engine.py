"""The policy engine: pure functions applying a PolicySpec to OpenAI-shaped request and response dicts."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from policies.spec import PolicySpec, Redaction

CHAT = "chat"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
MODERATIONS = "moderations"
IMAGES = "images"
AUDIO_SPEECH = "audio_speech"
AUDIO_TRANSCRIPTIONS = "audio_transcriptions"
AUDIO_TRANSLATIONS = "audio_translations"
MODELS = "models"
OTHER = "other"

# Endpoints whose body names a model: aliases and allowed_models apply to all of them.
MODEL_ENDPOINTS = frozenset(
    {
        CHAT,
        COMPLETIONS,
        EMBEDDINGS,
        MODERATIONS,
        IMAGES,
        AUDIO_SPEECH,
        AUDIO_TRANSCRIPTIONS,
        AUDIO_TRANSLATIONS,
    }
)
# Sampling parameters (temperature, max_tokens, ...) only mean something to text generation;
# sending them to embeddings or images would make many providers reject the request.
GENERATION_ENDPOINTS = frozenset({CHAT, COMPLETIONS})
USER_FIELD_ENDPOINTS = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, IMAGES})
# Where blocked patterns look, and the request field a rejection names.
BLOCKED_TEXT_FIELDS = {
    CHAT: "messages",
    COMPLETIONS: "prompt",
    EMBEDDINGS: "input",
    MODERATIONS: "input",
    # Not in the original list, but these prompts leave for the upstream just the same.
    IMAGES: "prompt",
    AUDIO_SPEECH: "input",
}
# "developer" is the newer name OpenAI gives system instructions; both count as the client's.
SYSTEM_ROLES = frozenset({"system", "developer"})
TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")


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


def apply_request(spec: PolicySpec, endpoint: str, body: dict[str, Any], context: RequestContext) -> RequestPlan:
    """Return the body to forward upstream and what the policy changed; raise PolicyRejection.

    The input is never mutated. The returned body is a new dict, but nested values the
    policy did not touch are shared with the input: copy them before changing them.
    """
    if endpoint not in MODEL_ENDPOINTS or not isinstance(body, dict):
        model = body.get("model") if isinstance(body, dict) else None
        return RequestPlan(body=body, modifications=[], original_model=model, upstream_model=model)

    out = dict(body)
    mods: list[str] = []
    original_model = _apply_model(spec, out, mods)
    _check_blocked(spec, endpoint, out)
    if endpoint in GENERATION_ENDPOINTS:
        _apply_system_context(spec, endpoint, out, mods)
        _apply_params(spec, out, mods)
        _apply_ceiling(spec, out, mods)
    if endpoint in USER_FIELD_ENDPOINTS:
        _apply_user_field(spec, out, mods, context)
    if endpoint == EMBEDDINGS:
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


def _check_blocked(spec: PolicySpec, endpoint: str, body: dict[str, Any]) -> None:
    if not spec.blocked_patterns:
        return
    param = BLOCKED_TEXT_FIELDS.get(endpoint)
    if param is None:
        return
    for text in _request_texts(body.get(param)):
        for rule in spec.blocked_patterns:
            if rule.regex.search(text):
                # The message names the rule, never the matched text: it may be the secret.
                raise PolicyRejection(
                    status=400,
                    code="content_policy_violation",
                    message=f'The request was blocked by the content policy rule "{rule.name}".',
                    param=param,
                )


def _request_texts(value: Any) -> Iterator[str]:
    """Every text in messages, a prompt or an input: strings, message contents, text parts."""
    # Only the shapes OpenAI defines are walked: a client cannot make us recurse deeply.
    for item in value if isinstance(value, list) else (value,):
        if isinstance(item, dict) and "content" in item:  # a chat message
            item = item["content"]
        for part in item if isinstance(item, list) else (item,):
            if isinstance(part, str):
                yield part
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def _apply_system_context(spec: PolicySpec, endpoint: str, body: dict[str, Any], mods: list[str]) -> None:
    if not spec.system_context:
        return
    if endpoint == CHAT:
        changed = _system_context_chat(spec, body)
    else:
        changed = _system_context_prompt(spec, body)
    if changed:
        mods.append(f"system_context:{spec.system_context_mode}")


def _system_context_chat(spec: PolicySpec, body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    ours = {"role": "system", "content": spec.system_context}
    mode = spec.system_context_mode
    if mode == "if_missing":
        if any(_is_system(m) for m in messages):
            return False
        body["messages"] = [ours, *messages]
    elif mode == "prepend":
        body["messages"] = [ours, *messages]
    else:  # replace
        body["messages"] = [ours, *(m for m in messages if not _is_system(m))]
    return True


def _is_system(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") in SYSTEM_ROLES


def _system_context_prompt(spec: PolicySpec, body: dict[str, Any]) -> bool:
    # A prompt has no system message to look for or replace: every mode prefixes it.
    # Token-id prompts are left alone: we cannot tokenize the context for the model.
    prompt = body.get("prompt")
    prefix = spec.system_context + "\n\n"
    if isinstance(prompt, str):
        body["prompt"] = prefix + prompt
        return True
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        body["prompt"] = [prefix + p for p in prompt]
        return True
    return False


def _apply_params(spec: PolicySpec, body: dict[str, Any], mods: list[str]) -> None:
    # A parameter sent as null counts as not set, as it does for OpenAI.
    model = body.get("model")
    if spec.model_rules and isinstance(model, str):
        for rule in spec.model_rules:
            if not rule.regex.match(model):
                continue
            for key, value in rule.defaults.items():
                # Checking the body also makes earlier rules win over later ones.
                if body.get(key) is None:
                    body[key] = _fresh(value)
                    mods.append(f"model_rule:{rule.pattern}:{key}")
    for key, value in spec.param_defaults.items():
        if body.get(key) is None:
            body[key] = _fresh(value)
            mods.append(f"default:{key}")
    for key, value in spec.param_overrides.items():
        if key not in body or body[key] != value:
            body[key] = _fresh(value)
            mods.append(f"override:{key}")


def _apply_ceiling(spec: PolicySpec, body: dict[str, Any], mods: list[str]) -> None:
    # Only clamps what the client sent; a param_defaults entry covers clients that send nothing.
    ceiling = spec.max_tokens_ceiling
    if ceiling is None:
        return
    for key in TOKEN_LIMIT_PARAMS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
            body[key] = ceiling
            mods.append(f"ceiling:{key}:{value}->{ceiling}")


def _apply_user_field(spec: PolicySpec, body: dict[str, Any], mods: list[str], context: RequestContext) -> None:
    if spec.user_field == "leave":
        return
    if body.get("user") is not None and not spec.user_field_override:
        return
    value = context.key_name if spec.user_field == "key_name" else context.client_ip
    if value and body.get("user") != value:
        body["user"] = value
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


def apply_response(spec: PolicySpec, endpoint: str, body: dict[str, Any], context: ResponseContext) -> dict[str, Any]:
    """Redact the answer text and add annotations; returns a new dict when anything changed."""
    if endpoint == OTHER or not isinstance(body, dict):
        return body
    if spec.response_redactions and endpoint in GENERATION_ENDPOINTS:
        body = _redact_choices(spec.response_redactions, endpoint, body)
    if spec.annotate_responses:
        body = _annotate(spec, body, context)
    return body


def _redact_choices(redactions: tuple[Redaction, ...], endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list):
        return body
    new_choices = [_redact_choice(redactions, endpoint, c) for c in choices]
    if all(new is old for new, old in zip(new_choices, choices, strict=True)):
        return body
    return {**body, "choices": new_choices}


def _redact_choice(redactions: tuple[Redaction, ...], endpoint: str, choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice
    if endpoint == COMPLETIONS:
        text = choice.get("text")
        if not isinstance(text, str):
            return choice
        redacted = redact_text(redactions, text)
        return choice if redacted == text else {**choice, "text": redacted}
    message = choice.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        return choice
    redacted = redact_text(redactions, message["content"])
    if redacted == message["content"]:
        return choice
    return {**choice, "message": {**message, "content": redacted}}


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
