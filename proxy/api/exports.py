"""Audit exports as JSON Lines and CSV, produced chunk by chunk so memory stays flat whatever the range."""

import csv
import json
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet

from proxy.api.serializers import ALL_FIELDS, METADATA_FIELDS

CHUNK_ROWS = 2000
# Spreadsheets run a cell starting with one of these as a formula; user agents and models are client input.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Echo:
    """A file-like object whose write() returns what it was given: csv.writer without a buffer."""

    def write(self, value: str) -> str:
        return value


def jsonl_lines(rows: Iterable[dict]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, cls=DjangoJSONEncoder, ensure_ascii=False) + "\n"


def csv_lines(rows: Iterable[dict], fields: tuple[str, ...] = METADATA_FIELDS) -> Iterator[str]:
    writer = csv.writer(Echo())
    yield writer.writerow(fields)
    for row in rows:
        yield writer.writerow([csv_cell(row[field]) for field in fields])


def csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


FORMATS = {
    # JSON Lines carries whole records, bodies included; CSV is for spreadsheets, so metadata only.
    "jsonl": (ALL_FIELDS, jsonl_lines),
    "csv": (METADATA_FIELDS, csv_lines),
}


def export_chunks(*, queryset: QuerySet, format: str) -> Generator[bytes, None, None]:
    """The export, a few thousand rows per chunk; the database sends them through a server-side cursor."""
    fields, lines = FORMATS[format]
    rows = queryset.values(*fields).iterator(chunk_size=CHUNK_ROWS)
    chunk: list[str] = []
    for line in lines(rows):
        chunk.append(line)
        if len(chunk) >= CHUNK_ROWS:
            yield "".join(chunk).encode()
            chunk = []
    if chunk:
        yield "".join(chunk).encode()


async def export_chunks_async(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """The same chunks for an ASGI server, each produced in the request's sync thread (and connection)."""
    next_chunk = sync_to_async(next)
    try:
        while (chunk := await next_chunk(chunks, None)) is not None:
            yield chunk
    finally:
        # A client gone mid-download: close the server-side cursor now, not at garbage collection.
        await sync_to_async(chunks.close)()
