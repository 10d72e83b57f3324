"""Find the :class:`~shipkit.service.app.Service` a ``MODULE[:ATTR]`` string names; errors say how to fix it."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from shipkit.errors import ImportFromStringError
from shipkit.service.app import Service

__all__ = ["load_service"]


def _import_module(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(f"{exc.name}.")):
            raise ImportFromStringError(
                f"could not import module {module_name!r}: no such module. Run from the directory that holds it, "
                f"or pass --app-dir (searched: {', '.join(sys.path[:3])}, ...)"
            ) from exc
        raise ImportFromStringError(
            f"importing {module_name!r} failed: it imports {exc.name!r}, which is not installed ({exc})"
        ) from exc
    except Exception as exc:
        raise ImportFromStringError(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc} (fix the error in that module)"
        ) from exc


def _resolve(value: Any, where: str) -> Service:
    if isinstance(value, Service):
        return value
    if callable(value) and not inspect.isclass(value):
        if inspect.iscoroutinefunction(value):
            raise ImportFromStringError(f"{where} is an async function; a factory must be a plain function")
        try:
            produced = value()
        except TypeError as exc:
            raise ImportFromStringError(f"{where} looks like a factory but calling it failed: {exc}") from exc
        except Exception as exc:
            raise ImportFromStringError(
                f"factory {where} raised {type(exc).__name__}: {exc} (fix the error in that function)"
            ) from exc
        if isinstance(produced, Service):
            return produced
        raise ImportFromStringError(f"factory {where} returned {type(produced).__name__}, not a shipkit.Service")
    raise ImportFromStringError(f"{where} is a {type(value).__name__}, not a shipkit.Service (or a factory of one)")


def load_service(target: str, *, app_dir: str | Path | None = None) -> Service:
    """Import ``MODULE:ATTR`` (``ATTR`` may be dotted, or a factory), or ``MODULE`` holding exactly one Service.

    Args:
        target: ``"package.module:service"`` or ``"package.module"``.
        app_dir: a directory put first on ``sys.path`` (default: the current directory).

    Raises:
        ImportFromStringError: a message naming what is wrong and how to fix it.
    """
    directory = str(Path(app_dir).resolve()) if app_dir is not None else str(Path.cwd())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise ImportFromStringError(f"{target!r} must look like 'module:attribute' or 'module'")
    module = _import_module(module_name)
    if attr:
        value: Any = module
        for part in attr.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise ImportFromStringError(f"module {module_name!r} has no attribute {attr!r}") from None
        return _resolve(value, f"{module_name}:{attr}")
    found = {name: value for name, value in vars(module).items() if isinstance(value, Service)}
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise ImportFromStringError(
            f"module {module_name!r} holds no shipkit.Service; name one as '{module_name}:attribute'"
        )
    raise ImportFromStringError(
        f"module {module_name!r} holds several services ({', '.join(sorted(found))}); "
        f"name one as '{module_name}:{sorted(found)[0]}'"
    )
