"""URLs of the audit API, mounted at /api/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from proxy.api import views

app_name = "api"

urlpatterns = [
    path("audit/", views.AuditRecordListApi.as_view(), name="audit-list"),
    path("audit/<int:pk>/", views.AuditRecordDetailApi.as_view(), name="audit-detail"),
    path("audit/export.jsonl", views.AuditExportJsonLinesApi.as_view(), name="audit-export-jsonl"),
    path("audit/export.csv", views.AuditExportCsvApi.as_view(), name="audit-export-csv"),
    path("usage/", views.AuditUsageApi.as_view(), name="usage"),
    path(
        "schema/", SpectacularAPIView.as_view(custom_settings={"DESCRIPTION": views.SCHEMA_DESCRIPTION}), name="schema"
    ),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
