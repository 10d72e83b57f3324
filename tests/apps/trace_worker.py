"""A job worker in its own process that exports its spans as JSON lines to ``$SHIPKIT_TEST_SPANS``.

The tracer provider is configured at import, before ``shipkit run`` builds the runtime, as a real
deployment would configure it; the first attempt of every job fails so a retry shows up too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from span_records import span_record  # the app dir is on sys.path in `shipkit run`

from shipkit import Service
from shipkit.jobs import Backoff, JobContext


class JsonLinesExporter(SpanExporter):
    """Appends one JSON line per finished span to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(span_record(span)) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["SHIPKIT_TEST_SPANS"])))
trace.set_tracer_provider(provider)

service = Service("tracedworker")


@service.job_worker("invoicer", backoff=Backoff(initial_s=0.05), max_attempts=3)
async def invoice(payload: dict[str, Any], job: JobContext) -> dict[str, Any]:
    """Fail the first attempt, complete the second."""
    if job.attempt == 1:
        raise RuntimeError("first attempt fails on purpose")
    return {"invoiced": payload["order"]}
