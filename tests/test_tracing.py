"""``shipkit._tracing`` and the optional extras: the core imports and runs without opentelemetry or prometheus."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from shipkit import _tracing

ROOT = Path(__file__).resolve().parent.parent


def _run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing opentelemetry or prometheus_client fails."""
    prelude = "import sys\nfor name in ('opentelemetry', 'prometheus_client'):\n    sys.modules[name] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_core_imports_and_serves_without_the_extras() -> None:
    """Without the otel/metrics extras shipkit imports, tracing is off, and a runtime is built untraced."""
    result = _run_without_extras(
        """
        import shipkit, shipkit.cli.main
        from shipkit import Service, _tracing
        from shipkit.service.runtime import Runtime
        assert _tracing.tracer() is None
        service = Service("bare")
        runtime = Runtime(service, "nats://127.0.0.1:1")
        assert runtime.observability.tracer is None and runtime.observability.metrics is None
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_metrics_port_without_prometheus_says_how_to_install_it() -> None:
    """Asking for metrics without prometheus-client fails at construction with the extra to install."""
    result = _run_without_extras(
        """
        from shipkit import Service
        from shipkit.errors import ConfigurationError
        from shipkit.service.runtime import Runtime
        try:
            Runtime(Service("bare"), "nats://127.0.0.1:1", metrics_port=0)
        except ConfigurationError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'shipkit[metrics]'" in result.stdout


def test_no_provider_means_no_tracer() -> None:
    """With no tracer provider configured (the default), shipkit's components get no tracer."""
    assert _tracing.tracer() is None


def test_extract_without_headers_is_an_empty_context() -> None:
    """Headers without a traceparent (or none at all) give a context with no parent span."""
    from opentelemetry import trace

    for headers in (None, {}, {"traceparent": "garbage"}):
        assert not trace.get_current_span(_tracing.extract(headers)).get_span_context().is_valid


def test_use_tracer_provider_none_restores_the_default() -> None:
    """Resetting the override leaves tracing off again (the global provider is never touched)."""
    from opentelemetry.sdk.trace import TracerProvider

    _tracing.use_tracer_provider(TracerProvider())
    try:
        assert _tracing.tracer() is not None
    finally:
        _tracing.use_tracer_provider(None)
    assert _tracing.tracer() is None
