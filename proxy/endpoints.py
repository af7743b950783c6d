"""The /v1 endpoints aiproxy knows: how each one's body is read and where it goes upstream."""

from dataclasses import dataclass

from policies import engine


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    upstream_path: str | None  # None: the client's own path, checked
    methods: tuple[str, ...] = ("POST",)
    body: str = "json"  # "json" | "multipart" | "raw"
    requires_model: bool = True


CHAT = Endpoint(engine.CHAT, "/v1/chat/completions")
COMPLETIONS = Endpoint(engine.COMPLETIONS, "/v1/completions")
EMBEDDINGS = Endpoint(engine.EMBEDDINGS, "/v1/embeddings")
MODERATIONS = Endpoint(engine.MODERATIONS, "/v1/moderations", requires_model=False)
IMAGES = Endpoint(engine.IMAGES, "/v1/images/generations", requires_model=False)
AUDIO_SPEECH = Endpoint(engine.AUDIO_SPEECH, "/v1/audio/speech")
AUDIO_TRANSCRIPTIONS = Endpoint(engine.AUDIO_TRANSCRIPTIONS, "/v1/audio/transcriptions", body="multipart")
AUDIO_TRANSLATIONS = Endpoint(engine.AUDIO_TRANSLATIONS, "/v1/audio/translations", body="multipart")
MODELS = Endpoint(engine.MODELS, "/v1/models", methods=("GET",), body="raw", requires_model=False)
OTHER = Endpoint(
    engine.OTHER,
    None,
    methods=("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"),
    body="raw",
    requires_model=False,
)
