"""What a policy would do to a sample request: the admin's preview, built on the engine alone."""

import difflib
import json
from dataclasses import dataclass, field

from policies import engine
from policies.spec import PolicySpec

PREVIEW_ENDPOINTS = (
    (engine.CHAT, "POST /v1/chat/completions"),
    (engine.COMPLETIONS, "POST /v1/completions"),
    (engine.RESPONSES, "POST /v1/responses (Responses API)"),
    (engine.MESSAGES, "POST /v1/messages (Anthropic Messages)"),
    (engine.MESSAGES_COUNT_TOKENS, "POST /v1/messages/count_tokens"),
    (engine.EMBEDDINGS, "POST /v1/embeddings"),
    (engine.MODERATIONS, "POST /v1/moderations"),
    (engine.IMAGES, "POST /v1/images/generations"),
    (engine.AUDIO_SPEECH, "POST /v1/audio/speech"),
)
SAMPLE_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}


@dataclass
class Preview:
    forwarded: str = ""
    diff: list[str] = field(default_factory=list)
    modifications: list[str] = field(default_factory=list)
    rejection: str = ""
    error: str = ""


def _pretty(body: dict) -> str:
    return json.dumps(body, indent=2, ensure_ascii=False)


def policy_preview(*, spec: PolicySpec, endpoint: str, body_text: str, key_name: str = "preview") -> Preview:
    """The forwarded body, its diff against the original and the modifications; or why it is refused."""
    try:
        body = json.loads(body_text)
    except json.JSONDecodeError as exc:
        return Preview(error=f"The sample is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return Preview(error="The sample must be a JSON object.")
    try:
        plan = engine.apply_request(
            spec, endpoint, body, engine.RequestContext(key_name=key_name, client_ip="127.0.0.1")
        )
    except engine.PolicyRejection as rejection:
        return Preview(rejection=f"{rejection.status} {rejection.code}: {rejection.message}")
    original, forwarded = _pretty(body).splitlines(), _pretty(plan.body).splitlines()
    diff = list(difflib.unified_diff(original, forwarded, "sent by the client", "forwarded upstream", lineterm=""))
    return Preview(forwarded=_pretty(plan.body), diff=diff, modifications=plan.modifications)
