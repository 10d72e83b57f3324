"""Registration errors that name the function: :func:`registering`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from shipkit.errors import ConfigurationError

__all__ = ["registering"]


@contextmanager
def registering(func: Callable[..., Any]) -> Iterator[None]:
    """Re-raise a failed registration of ``func`` as a :class:`ConfigurationError` naming it.

    The error keeps its class (an :class:`~shipkit.errors.InvalidNameError` stays one); a raw
    pydantic ``ValidationError`` from a config built for the registration becomes a
    ``ConfigurationError``.
    """
    name = getattr(func, "__qualname__", None) or repr(func)
    try:
        yield
    except ConfigurationError as exc:
        if name in str(exc):
            raise
        raise type(exc)(f"{name}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(str(error["msg"]) for error in exc.errors()[:3])
        raise ConfigurationError(f"{name}: {problems}") from exc
