"""``load_service``: every way of naming a Service, and an error that says what to fix for every wrong one."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shipkit import Service
from shipkit.errors import ImportFromStringError
from shipkit.service.importer import load_service

WriteModule = Callable[[str, str], Path]


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory for test modules; sys.path and the modules imported from it are restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def write_module(app_dir: Path) -> WriteModule:
    """Write ``name.py`` (dots make packages) into the app dir."""

    def write(name: str, source: str) -> Path:
        *packages, module = name.split(".")
        directory = app_dir.joinpath(*packages)
        directory.mkdir(parents=True, exist_ok=True)
        for depth in range(len(packages)):
            app_dir.joinpath(*packages[: depth + 1], "__init__.py").touch()
        path = directory / f"{module}.py"
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return path

    return write


ONE_SERVICE = """
    from shipkit import Service

    service = Service("imported")
"""


def test_module_and_attribute(app_dir: Path, write_module: WriteModule) -> None:
    """`module:attr` returns that Service."""
    write_module("svc_attr", ONE_SERVICE)
    service = load_service("svc_attr:service", app_dir=app_dir)
    assert isinstance(service, Service)
    assert service.name == "imported"


def test_module_alone_with_one_service(app_dir: Path, write_module: WriteModule) -> None:
    """`module` alone finds the only Service in it."""
    write_module("svc_alone", ONE_SERVICE)
    assert load_service("svc_alone", app_dir=app_dir).name == "imported"


def test_dotted_module_and_attribute(app_dir: Path, write_module: WriteModule) -> None:
    """Packages and dotted attributes both resolve (`pkg.mod:holder.service`)."""
    write_module(
        "pkg_dotted.inner",
        """
        from types import SimpleNamespace

        from shipkit import Service

        holder = SimpleNamespace(service=Service("nested"))
        """,
    )
    assert load_service("pkg_dotted.inner:holder.service", app_dir=app_dir).name == "nested"


def test_factory_is_called(app_dir: Path, write_module: WriteModule) -> None:
    """A function attribute is called and the Service it returns is used."""
    write_module(
        "svc_factory",
        """
        from shipkit import Service

        def create():
            return Service("made")
        """,
    )
    assert load_service("svc_factory:create", app_dir=app_dir).name == "made"


def test_current_directory_is_the_default_app_dir(
    app_dir: Path, write_module: WriteModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without app_dir, modules are imported from the current directory."""
    write_module("svc_cwd", ONE_SERVICE)
    monkeypatch.chdir(app_dir)
    assert load_service("svc_cwd").name == "imported"


def test_missing_module_suggests_app_dir(app_dir: Path) -> None:
    """A module that does not exist: the message says so and points at --app-dir."""
    with pytest.raises(
        ImportFromStringError, match=r"could not import module 'svc_nowhere': no such module.*--app-dir"
    ):
        load_service("svc_nowhere", app_dir=app_dir)


def test_missing_dependency_is_named(app_dir: Path, write_module: WriteModule) -> None:
    """A module importing a package that is not installed: the message names that package, not the module."""
    write_module("svc_needs_dep", "import shipkit_no_such_dependency\n")
    with pytest.raises(ImportFromStringError, match="imports 'shipkit_no_such_dependency', which is not installed"):
        load_service("svc_needs_dep", app_dir=app_dir)


def test_missing_attribute(app_dir: Path, write_module: WriteModule) -> None:
    """An attribute the module does not have is named in the message."""
    write_module("svc_noattr", ONE_SERVICE)
    with pytest.raises(ImportFromStringError, match="module 'svc_noattr' has no attribute 'app'"):
        load_service("svc_noattr:app", app_dir=app_dir)


def test_module_raising_on_import(app_dir: Path, write_module: WriteModule) -> None:
    """An exception at import time is reported with its type and text, and kept as the cause."""
    write_module("svc_raises", "raise KeyError('boom at import')\n")
    with pytest.raises(
        ImportFromStringError, match=r"importing 'svc_raises' raised KeyError: 'boom at import'"
    ) as caught:
        load_service("svc_raises", app_dir=app_dir)
    assert isinstance(caught.value.__cause__, KeyError)


def test_registration_error_at_import(app_dir: Path, write_module: WriteModule) -> None:
    """A decorator misuse (a sync handler) surfaces as an import error naming the function."""
    write_module(
        "svc_sync_handler",
        """
        from shipkit import Service

        service = Service("bad")

        @service.handler("x")
        def not_async(payload: dict) -> dict:
            return payload
        """,
    )
    with pytest.raises(ImportFromStringError, match=r"ConfigurationError: handler not_async must be an `async def`"):
        load_service("svc_sync_handler", app_dir=app_dir)


def test_two_services_need_a_name(app_dir: Path, write_module: WriteModule) -> None:
    """A module with several services: the message lists them and shows the `module:attr` form."""
    write_module(
        "svc_two",
        """
        from shipkit import Service

        alpha = Service("alpha")
        beta = Service("beta")
        """,
    )
    with pytest.raises(ImportFromStringError, match=r"several services \(alpha, beta\); name one as 'svc_two:alpha'"):
        load_service("svc_two", app_dir=app_dir)


def test_no_service_in_module(app_dir: Path, write_module: WriteModule) -> None:
    """A module without any Service says how to name one."""
    write_module("svc_none", "value = 1\n")
    with pytest.raises(ImportFromStringError, match=r"holds no shipkit\.Service; name one as 'svc_none:attribute'"):
        load_service("svc_none", app_dir=app_dir)


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("number", "svc_misc:number is a int, not a shipkit.Service (or a factory of one)"),
        ("ServiceClass", "svc_misc:ServiceClass is a type, not a shipkit.Service"),
        ("returns_none", "factory svc_misc:returns_none returned NoneType, not a shipkit.Service"),
        ("needs_args", "svc_misc:needs_args looks like a factory but calling it failed"),
        ("async_factory", "svc_misc:async_factory is an async function; a factory must be a plain function"),
        ("broken_factory", "factory svc_misc:broken_factory raised OSError: disk on fire"),
    ],
)
def test_not_a_service(app_dir: Path, write_module: WriteModule, attribute: str, message: str) -> None:
    """Attributes that are not a Service, or factories that do not produce one, are refused with a reason."""
    write_module(
        "svc_misc",
        """
        from shipkit import Service

        number = 3
        ServiceClass = Service

        def returns_none():
            return None

        def needs_args(name):
            return Service(name)

        async def async_factory():
            return Service("never")

        def broken_factory():
            raise OSError("disk on fire")
        """,
    )
    with pytest.raises(ImportFromStringError) as caught:
        load_service(f"svc_misc:{attribute}", app_dir=app_dir)
    assert message in str(caught.value)


@pytest.mark.parametrize("target", ["svc_attr:", ":service", ""])
def test_malformed_target(app_dir: Path, target: str) -> None:
    """An empty module or attribute part is refused before anything is imported."""
    with pytest.raises(ImportFromStringError, match="must look like 'module:attribute' or 'module'"):
        load_service(target, app_dir=app_dir)
