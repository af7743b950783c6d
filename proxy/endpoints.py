"""The /v1 endpoints aiproxy knows: their surface adapter, how the body is read and where it goes upstream."""

from dataclasses import dataclass

from policies import surfaces
from policies.surfaces import Surface


@dataclass(frozen=True, slots=True)
class Endpoint:
    surface: Surface
    upstream_path: str | None  # None: built by the view (an object's id), or the client's own path, checked
    methods: tuple[str, ...] = ("POST",)
    body: str = "json"  # "json" | "multipart" | "raw"
    requires_model: bool = True

    @property
    def name(self) -> str:
        """The endpoint's name in the audit record and the metrics."""
        return self.surface.name


CHAT = Endpoint(surfaces.CHAT, "/v1/chat/completions")
COMPLETIONS = Endpoint(surfaces.COMPLETIONS, "/v1/completions")
RESPONSES = Endpoint(surfaces.RESPONSES, "/v1/responses")
# A stored response: GET/DELETE /v1/responses/{id}, GET .../input_items, POST .../cancel.
RESPONSE_OBJECT = Endpoint(surfaces.RESPONSE_OBJECT, None, methods=("GET", "DELETE"), body="raw", requires_model=False)
RESPONSE_INPUT_ITEMS = Endpoint(surfaces.RESPONSE_OBJECT, None, methods=("GET",), body="raw", requires_model=False)
RESPONSE_CANCEL = Endpoint(surfaces.RESPONSE_OBJECT, None, methods=("POST",), body="raw", requires_model=False)
MESSAGES = Endpoint(surfaces.MESSAGES, "/v1/messages")
MESSAGES_COUNT_TOKENS = Endpoint(surfaces.MESSAGES_COUNT_TOKENS, "/v1/messages/count_tokens")
EMBEDDINGS = Endpoint(surfaces.EMBEDDINGS, "/v1/embeddings")
MODERATIONS = Endpoint(surfaces.MODERATIONS, "/v1/moderations", requires_model=False)
IMAGES = Endpoint(surfaces.IMAGES, "/v1/images/generations", requires_model=False)
AUDIO_SPEECH = Endpoint(surfaces.AUDIO_SPEECH, "/v1/audio/speech")
AUDIO_TRANSCRIPTIONS = Endpoint(surfaces.AUDIO_TRANSCRIPTIONS, "/v1/audio/transcriptions", body="multipart")
AUDIO_TRANSLATIONS = Endpoint(surfaces.AUDIO_TRANSLATIONS, "/v1/audio/translations", body="multipart")
MODELS = Endpoint(surfaces.MODELS, "/v1/models", methods=("GET",), body="raw", requires_model=False)
OTHER = Endpoint(
    surfaces.OTHER,
    None,
    methods=("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"),
    body="raw",
    requires_model=False,
)
