"""The proxy's own URLs (/v1, health checks): the whole URLconf of the lean /v1 handler.

Kept apart from the admin's and the API's so that a worker serving only /v1 never imports
them (about 16 MB of resident memory per worker).
"""

from django.urls import include, path, re_path

from proxy import endpoints, views

v1_patterns = [
    path("chat/completions", views.relay, {"endpoint": endpoints.CHAT}),
    path("completions", views.relay, {"endpoint": endpoints.COMPLETIONS}),
    path("embeddings", views.relay, {"endpoint": endpoints.EMBEDDINGS}),
    path("moderations", views.relay, {"endpoint": endpoints.MODERATIONS}),
    path("images/generations", views.relay, {"endpoint": endpoints.IMAGES}),
    path("audio/speech", views.relay, {"endpoint": endpoints.AUDIO_SPEECH}),
    path("audio/transcriptions", views.relay, {"endpoint": endpoints.AUDIO_TRANSCRIPTIONS}),
    path("audio/translations", views.relay, {"endpoint": endpoints.AUDIO_TRANSLATIONS}),
    path("models", views.models_list),
    path("models/<path:model>", views.model_detail),
    re_path(r"^(?P<path>.*)$", views.passthrough),
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
