"""Root URLs: the proxy's own (aiproxy/proxy_urls.py), metrics, the admin and the audit API."""

from django.contrib import admin
from django.urls import include, path

from aiproxy.proxy_urls import not_found_pattern, proxy_patterns
from proxy import metrics

urlpatterns = [
    *proxy_patterns,
    path("metrics", metrics.metrics_view),
    path("admin/", admin.site.urls),
    path("api/", include("proxy.api.urls")),
    not_found_pattern,
]

handler500 = "proxy.views.server_error"
