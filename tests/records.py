"""Waiting for the audit writer: a record lands a few milliseconds after its response ends."""

import time

from proxy.models import AuditRecord


def wait_for_record(request_id: str, timeout: float = 10.0) -> AuditRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = AuditRecord.objects.filter(request_id=request_id).first()
        if record is not None:
            return record
        assert time.monotonic() < deadline, f"no audit record for {request_id}"
        time.sleep(0.02)
