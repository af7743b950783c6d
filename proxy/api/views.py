"""The audit REST API: read-only views over the audit log, for auditors and their scripts."""

from datetime import timedelta

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView, ListAPIView, RetrieveAPIView
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import DjangoModelPermissions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from proxy.api.exports import export_chunks, export_chunks_async
from proxy.api.filters import AuditRecordFilter, AuditUsageFilter
from proxy.api.selectors import (
    NEWEST_FIRST,
    OLDEST_FIRST,
    audit_record_list,
    audit_usage_list,
    key_budget_list,
)
from proxy.api.serializers import AuditRecordDetailSerializer, AuditRecordListSerializer, UsageSerializer

USAGE_DEFAULT_RANGE = timedelta(days=7)
SCHEMA_DESCRIPTION = """Read-only access to aiproxy's audit log.

**Authentication.** Scripts send `Authorization: Token <token>`; an operator creates the token with
`python manage.py drf_create_token <username>`. In a browser, log in at `/admin/` first: the session works here too.

**Permission.** The user needs Django's *Can view audit record* permission (`proxy.view_auditrecord`); an auditor
need not be staff or a superuser. Without credentials: 401. Without the permission: 403. Every write: 405.

**Pagination.** `/api/audit/` pages with a cursor, newest first: follow `next`. `page_size` defaults to 50, at most 500.

**Text search.** `q` searches the request, forwarded and response bodies, case-insensitively. No index serves it: on
PostgreSQL it scans the records the other filters leave, so narrow those (time range, key) first.

**Exports.** `/api/audit/export.jsonl` (whole records) and `/api/audit/export.csv` (metadata) take the list's
filters, stream every match oldest first, and have no cap.
"""
VIEW_PERMISSION = ["%(app_label)s.view_%(model_name)s"]


class CanViewAuditRecords(DjangoModelPermissions):
    """proxy.view_auditrecord, whatever the method: writes then answer 405, not a misleading 403."""

    perms_map = {method: VIEW_PERMISSION for method in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")}


class AuditCursorPagination(CursorPagination):
    # The audit_newest index: an immutable, near-unique ordering, so pages never skip or repeat a record.
    ordering = NEWEST_FIRST
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class FilteredSchema(AutoSchema):
    """Documents the filterset's parameters on views that are not lists in DRF's sense (exports, usage)."""

    def get_filter_backends(self) -> list:
        return list(getattr(self.view, "filter_backends", []))


class ErrorsAsJson(BaseContentNegotiation):
    """An export's URL names its format; the one renderer only ever renders errors, in JSON."""

    def select_parser(self, request, parsers):
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class AuditApi(GenericAPIView):
    # Token first: DRF answers an anonymous request 401 only when the first authenticator offers a
    # WWW-Authenticate header, and SessionAuthentication (first in settings) offers none.
    authentication_classes = (TokenAuthentication, SessionAuthentication)
    permission_classes = (CanViewAuditRecords,)
    filter_backends = (DjangoFilterBackend,)
    filterset_class = AuditRecordFilter


class AuditRecordListApi(AuditApi, ListAPIView):
    """Audit records, newest first, metadata only (the detail has the bodies)."""

    serializer_class = AuditRecordListSerializer
    pagination_class = AuditCursorPagination

    def get_queryset(self):
        return audit_record_list()


class AuditRecordDetailApi(AuditApi, RetrieveAPIView):
    """One audit record, whole: bodies as received, as forwarded and as answered."""

    serializer_class = AuditRecordDetailSerializer
    filter_backends = ()

    def get_queryset(self):
        return audit_record_list(bodies=True)


class AuditExportApi(AuditApi):
    """The filtered list, oldest first and without a cap, streamed so memory stays flat."""

    renderer_classes = (JSONRenderer,)
    content_negotiation_class = ErrorsAsJson
    schema = FilteredSchema()
    export_format = ""
    media_type = ""

    def get_queryset(self):
        return audit_record_list(bodies=True, ordering=OLDEST_FIRST)

    def get(self, request, *args, **kwargs):
        chunks = export_chunks(queryset=self.filter_queryset(self.get_queryset()), format=self.export_format)
        # Django reads a sync iterator whole into a list before an ASGI server sends a byte, and an
        # async one whole under WSGI: give each server the kind it streams.
        if isinstance(request._request, ASGIRequest):
            chunks = export_chunks_async(chunks)
        response = StreamingHttpResponse(chunks, content_type=self.media_type)
        filename = f"audit-{timezone.now():%Y%m%dT%H%M%SZ}.{self.export_format}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


@extend_schema_view(
    get=extend_schema(
        operation_id="audit_export_jsonl",
        summary="Export audit records as JSON Lines",
        description="One whole record (bodies included) per line, oldest first. Same filters as the list; no cap.",
        responses={(200, "application/jsonl"): OpenApiTypes.STR},
    )
)
class AuditExportJsonLinesApi(AuditExportApi):
    export_format = "jsonl"
    media_type = "application/jsonl"


@extend_schema_view(
    get=extend_schema(
        operation_id="audit_export_csv",
        summary="Export audit records as CSV",
        description="One record per row, metadata only, oldest first, with a header row. Same filters as the list.",
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
)
class AuditExportCsvApi(AuditExportApi):
    export_format = "csv"
    media_type = "text/csv; charset=utf-8"


@extend_schema_view(get=extend_schema(operation_id="usage_report"))
class AuditUsageApi(AuditApi):
    """Requests, errors, tokens, durations and spend per key, model and month, day or hour (the last 7 days by
    default), and each budgeted key's spend this day and month against its budget."""

    serializer_class = UsageSerializer
    # Declared for the schema; get() runs the filterset itself because it needs the cleaned values.
    filterset_class = AuditUsageFilter
    schema = FilteredSchema()

    def get_queryset(self):
        return audit_record_list()

    def get(self, request, *args, **kwargs):
        filterset = self.filterset_class(data=request.query_params, queryset=self.get_queryset(), request=request)
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        cleaned = filterset.form.cleaned_data
        until = cleaned["created_before"] or timezone.now()
        try:
            since = cleaned["created_after"] or until - USAGE_DEFAULT_RANGE
        except OverflowError:
            raise ValidationError({"created_before": ["Too early: give created_after as well."]}) from None
        bucket = cleaned["bucket"] or "day"
        rows = audit_usage_list(queryset=filterset.qs, since=since, until=until, bucket=bucket)
        report = {
            "created_after": since,
            "created_before": until,
            "bucket": bucket,
            "results": rows,
            "budgets": key_budget_list(timezone.now()),
        }
        return Response(self.get_serializer(report).data)
