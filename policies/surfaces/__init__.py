"""One adapter per API dialect a client speaks (DESIGN.md, "Surfaces"); the registry the engine looks them up in."""

from policies.surfaces.base import Surface
from policies.surfaces.chat import Chat, Completions
from policies.surfaces.messages import CountTokens, Messages
from policies.surfaces.plain import ModelOnly, Models, Passthrough
from policies.surfaces.responses import ResponseObject, Responses

CHAT = Chat()
COMPLETIONS = Completions()
RESPONSES = Responses()
RESPONSE_OBJECT = ResponseObject()
MESSAGES = Messages()
MESSAGES_COUNT_TOKENS = CountTokens()
EMBEDDINGS = ModelOnly("embeddings", "embeddings", text_field="input", sets_user=True)
MODERATIONS = ModelOnly("moderations", "moderations", text_field="input")
# Not chat, but these prompts leave for the upstream just the same.
IMAGES = ModelOnly("images", "images", text_field="prompt", sets_user=True)
AUDIO_SPEECH = ModelOnly("audio_speech", "audio", text_field="input")
AUDIO_TRANSCRIPTIONS = ModelOnly("audio_transcriptions", "audio")
AUDIO_TRANSLATIONS = ModelOnly("audio_translations", "audio")
MODELS = Models()
OTHER = Passthrough()

BY_NAME: dict[str, Surface] = {
    surface.name: surface
    for surface in (
        CHAT,
        COMPLETIONS,
        RESPONSES,
        RESPONSE_OBJECT,
        MESSAGES,
        MESSAGES_COUNT_TOKENS,
        EMBEDDINGS,
        MODERATIONS,
        IMAGES,
        AUDIO_SPEECH,
        AUDIO_TRANSCRIPTIONS,
        AUDIO_TRANSLATIONS,
        MODELS,
        OTHER,
    )
}
# What a policy's allowed_surfaces may name, in the order the admin shows them.
GOVERNED = ("chat", "completions", "responses", "messages", "embeddings", "moderations", "images", "audio", "models")


def surface_for(name_or_surface: "str | Surface") -> Surface:
    """The adapter itself, or the one registered under an endpoint name (OTHER for names nobody knows)."""
    if isinstance(name_or_surface, Surface):
        return name_or_surface
    return BY_NAME.get(name_or_surface, OTHER)


__all__ = ["BY_NAME", "GOVERNED", "Surface", "surface_for"]
