"""The Python blocks of docs/runtime.md and docs/testing.md are complete modules that import, register and run."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from examples.kanban.app import service as kanban_service
from shipkit import ConnectionManager, Service
from shipkit.testing import run_service

REPO_ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(doc: str) -> list[str]:
    """The ```python blocks of a document under docs/, in order."""
    return _BLOCK.findall((REPO_ROOT / "docs" / doc).read_text())


def load(source: str, name: str) -> types.ModuleType:
    """Execute a snippet as a module named ``name`` (registered while it runs, as an import would)."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


RUNTIME_BLOCKS = python_blocks("runtime.md")


def test_runtime_guide_has_a_snippet_per_decorator() -> None:
    """Every decorator of Service appears in a code block of docs/runtime.md."""
    code = "\n".join(RUNTIME_BLOCKS)
    decorators = ["handler", "default_handler", "mutation_callback", "on_event", "kv_watch", "on_message"]
    decorators += ["on_channel", "on_startup", "on_shutdown"]
    assert [d for d in decorators if f"@service.{d}" not in code] == []
    assert "lifespan=lifespan" in code


@pytest.mark.parametrize("index", range(len(RUNTIME_BLOCKS)))
async def test_runtime_snippet_runs(index: int, shipkit_connection: ConnectionManager, shipkit_nats_url: str) -> None:
    """The snippet imports cleanly; its service starts and stops on a real server; its Client main() works."""
    module = load(RUNTIME_BLOCKS[index], f"docs_runtime_{index}")
    service: Any = getattr(module, "service", None)
    if isinstance(service, Service):
        async with run_service(service, shipkit_connection) as runtime:
            assert runtime.discovery is not None
    if "Client" in vars(module) and hasattr(module, "main") and service is None:
        async with run_service(kanban_service, shipkit_connection):  # the Client snippet calls the kanban example
            await module.main(shipkit_nats_url)


def test_testing_guide_quotes_the_example_test_module() -> None:
    """The example test module in docs/testing.md is, character for character, a test file that runs in CI."""
    quoted = [block for block in python_blocks("testing.md") if "def test_create_then_get" in block]
    assert quoted == [(REPO_ROOT / "tests" / "examples" / "test_testing_guide.py").read_text()]


async def test_testing_guide_other_snippets_run() -> None:
    """The unit-test snippet passes and the outside-pytest snippet runs its own server end to end."""
    blocks = python_blocks("testing.md")
    unit = load(next(b for b in blocks if "test_hello_directly" in b), "docs_testing_unit")
    await unit.test_hello_directly()
    outside = load(next(b for b in blocks if "async with NatsServer()" in b), "docs_testing_outside")
    await outside.main()
