"""One-line messages for annotations pydantic cannot validate (registration errors users read)."""

from __future__ import annotations

from typing import Any

__all__ = ["unsupported_payload_type"]


def _type_name(annotation: Any) -> str:
    module = getattr(annotation, "__module__", None)
    name = getattr(annotation, "__qualname__", None)
    return f"{module}.{name}" if module and name and module != "builtins" else (name or repr(annotation))


def unsupported_payload_type(where: str, annotation: Any, exc: BaseException) -> str:
    """``"{where}: payload type asyncio.queues.Queue cannot be validated from JSON; use ..."`` on one line.

    pydantic's own message spans several lines and advises ``arbitrary_types_allowed``, which
    cannot help here: a payload arrives as JSON and must be rebuilt from it.
    """
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Unable to generate pydantic-core schema" in reason:
        reason = "pydantic has no schema for it"
    return (
        f"{where}: payload type {_type_name(annotation)} cannot be validated from JSON ({reason}); "
        "annotate a pydantic model, dataclass, TypedDict or JSON type (dict, list, str, int ...)"
    )
