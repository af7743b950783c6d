"""The proxy's own URLs (/v1, health checks): the whole URLconf of the lean /v1 handler.

Kept apart from the admin's and the API's so that a worker serving only /v1 never imports
them (about 16 MB of resident memory per worker).
"""

from django.urls import include, path, re_path

from proxy import endpoints, views

# Response ids as the upstream mints them (LiteLLM's are base64): nothing that could change the upstream path.
RESPONSE_ID = r"(?P<response_id>[A-Za-z0-9_.=-]{1,512})"

v1_patterns = [
    path("chat/completions", views.relay, {"endpoint": endpoints.CHAT}),
    path("completions", views.relay, {"endpoint": endpoints.COMPLETIONS}),
    path("responses", views.relay, {"endpoint": endpoints.RESPONSES}),
    re_path(rf"^responses/{RESPONSE_ID}$", views.response_object),
    re_path(rf"^responses/{RESPONSE_ID}/input_items$", views.response_input_items),
    re_path(rf"^responses/{RESPONSE_ID}/cancel$", views.response_cancel),
    path("messages", views.relay, {"endpoint": endpoints.MESSAGES}),
    path("messages/count_tokens", views.relay, {"endpoint": endpoints.MESSAGES_COUNT_TOKENS}),
    path("embeddings", views.relay, {"endpoint": endpoints.EMBEDDINGS}),
    path("moderations", views.relay, {"endpoint": endpoints.MODERATIONS}),
    path("images/generations", views.relay, {"endpoint": endpoints.IMAGES}),
    path("audio/speech", views.relay, {"endpoint": endpoints.AUDIO_SPEECH}),
    path("audio/transcriptions", views.relay, {"endpoint": endpoints.AUDIO_TRANSCRIPTIONS}),
    path("audio/translations", views.relay, {"endpoint": endpoints.AUDIO_TRANSLATIONS}),
    path("models", views.models_list),
    path("models/<path:model>", views.model_detail),
    # Everything else: served as a governed surface if it is a variant of one, else closed unless opened.
    re_path(r"^(?P<path>.*)$", views.v1_other),
]

proxy_patterns = [
    path("v1/", include(v1_patterns)),
    # Some clients are configured with the server's root as their base URL.
    path("chat/completions", views.relay, {"endpoint": endpoints.CHAT}),
    path("health", views.health),
    path("ready", views.ready),
]

# Anything else gets a JSON 404, never Django's HTML page.
not_found_pattern = re_path(r"^(?P<path>.*)$", views.unknown_path)

urlpatterns = [*proxy_patterns, not_found_pattern]

handler500 = "proxy.views.server_error"
