"""Root URLs: the /v1 proxy, health checks, the admin and the audit API."""

from django.contrib import admin
from django.urls import include, path, re_path

from proxy import endpoints, metrics, views

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

urlpatterns = [
    path("v1/", include(v1_patterns)),
    # Some clients are configured with the server's root as their base URL.
    path("chat/completions", views.relay, {"endpoint": endpoints.CHAT}),
    path("health", views.health),
    path("ready", views.ready),
    path("metrics", metrics.metrics_view),
    path("admin/", admin.site.urls),
    path("api/", include("proxy.api.urls")),
    # Anything else gets a JSON 404, never Django's HTML page.
    re_path(r"^(?P<path>.*)$", views.unknown_path),
]

handler500 = "proxy.views.server_error"
