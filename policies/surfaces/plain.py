"""Surfaces with a model and some input but no conversation: embeddings, moderations, images, audio, models."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.surfaces.base import Surface, part_texts


class ModelOnly(Surface):
    """A request that names a model and whose text (if any) lives in one field."""

    names_model = True
    text_field: str | None = None

    def __init__(self, name: str, group: str, *, text_field: str | None = None, sets_user: bool = False) -> None:
        self.name = name
        self.group = group
        self.text_field = text_field
        self.sets_user = sets_user

    def request_texts(self, body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        if self.text_field is None:
            return
        value = body.get(self.text_field)
        # Moderation inputs may be parts ({"type": "text", "text": ...}); token-id inputs have no text.
        for item in value if isinstance(value, list) else (value,):
            yield from ((self.text_field, text) for text in part_texts(item if isinstance(item, str) else [item]))


class Models(Surface):
    """GET /v1/models and /v1/models/<id>: the list is filtered by the engine, nothing else applies."""

    name = group = "models"


class Passthrough(Surface):
    """A path no surface governs, opened by a policy's passthrough_paths: forwarded as it is."""

    name = "other"
    group = ""
    annotates = False
