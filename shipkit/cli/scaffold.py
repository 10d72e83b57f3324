"""Project generation for ``shipkit new``: templates, a tiny renderer, and a writer that never overwrites.

A template is a directory under ``templates/`` (shipped in the wheel as ``shipkit/_templates``)::

    templates/service/
        pyproject.toml-tpl        rendered, written as pyproject.toml
        __package__/service.py-tpl   the directory is renamed to the project's package
        tests/test_service.py-tpl

Files ending in ``-tpl`` are rendered (``{{ name }}``-style placeholders, see :func:`render`) and
written without the suffix; other files are copied as they are. Python sources carry the suffix
so that nothing in the shipkit checkout imports, lints or collects them as tests.
"""

from __future__ import annotations

import keyword
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shipkit.errors import FilesExistError, ScaffoldError

__all__ = [
    "TEMPLATE_SUFFIX",
    "PlannedFile",
    "available_templates",
    "create_project",
    "plan_project",
    "project_context",
    "render",
    "templates_dir",
]

TEMPLATE_SUFFIX = "-tpl"
PACKAGE_PLACEHOLDER = "__package__"
"""A path segment with this name is renamed to the project's package name."""

_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_SKIPPED = frozenset({"__pycache__", ".DS_Store"})
_RESERVED_PACKAGES = frozenset({"shipkit", "tests", "test", "nats", "pydantic", "click", "structlog"})


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of a project to generate.

    Attributes:
        source: the template file.
        target: where it will be written.
        rendered: True for ``-tpl`` files (placeholders substituted), False for verbatim copies.
    """

    source: Path
    target: Path
    rendered: bool


def templates_dir() -> Path:
    """The directory holding the templates.

    The wheel ships them as ``shipkit/_templates``; an editable install or a checkout uses the
    repository's ``templates/`` next to the package.

    Raises:
        ScaffoldError: neither exists (a broken installation).
    """
    package_dir = Path(__file__).resolve().parent.parent  # shipkit/, from shipkit/cli/scaffold.py
    for candidate in (package_dir / "_templates", package_dir.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise ScaffoldError(
        f"shipkit's project templates are missing (looked in {package_dir / '_templates'} and "
        f"{package_dir.parent / 'templates'}); reinstall shipkit"
    )


def available_templates() -> list[str]:
    """Names of the templates ``shipkit new --template`` accepts, sorted."""
    return sorted(p.name for p in templates_dir().iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def render(text: str, context: Mapping[str, str], *, where: str = "template") -> str:
    """Substitute ``{{ key }}`` placeholders (spaces inside the braces optional).

    Nothing else is special: no loops, filters or escaping, so any other braces pass through.

    Raises:
        ScaffoldError: a placeholder names a key ``context`` does not have.
    """

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in context:
            known = ", ".join(sorted(context))
            raise ScaffoldError(f"{where}: unknown placeholder {{{{ {key} }}}} (known: {known})")
        return context[key]

    return _PLACEHOLDER_RE.sub(substitute, text)


def project_context(name: str) -> dict[str, str]:
    """The placeholder values for a project called ``name``.

    ``name`` is the service name (also the request subject prefix and the distribution name);
    ``package`` is its Python package (lowercase, ``-`` -> ``_``).

    Raises:
        ScaffoldError: ``name`` is not usable as a service name and package.
    """
    if not _NAME_RE.fullmatch(name):
        raise ScaffoldError(
            f"project name {name!r} must start with a letter and hold only letters, digits, '_' and '-'"
        )
    package = name.lower().replace("-", "_")
    if keyword.iskeyword(package) or package in sys.stdlib_module_names or package in _RESERVED_PACKAGES:
        raise ScaffoldError(
            f"project name {name!r} would make a package {package!r} that shadows another; pick another"
        )
    from shipkit._version import __version__

    return {
        "name": name,
        "package": package,
        "title": name.replace("-", " ").replace("_", " ").title(),
        "shipkit_version": __version__,
    }


def plan_project(template: str, target: Path, context: Mapping[str, str]) -> list[PlannedFile]:
    """The files generating ``template`` into ``target`` would write (nothing is touched).

    Raises:
        ScaffoldError: ``template`` is not one of :func:`available_templates`.
    """
    if template not in available_templates():
        raise ScaffoldError(f"unknown template {template!r}; choose one of: {', '.join(available_templates())}")
    source_root = templates_dir() / template
    planned: list[PlannedFile] = []
    for source in sorted(source_root.rglob("*")):
        relative = source.relative_to(source_root)
        if not source.is_file() or _SKIPPED.intersection(relative.parts) or source.suffix == ".pyc":
            continue
        parts = [context["package"] if part == PACKAGE_PLACEHOLDER else part for part in relative.parts]
        rendered = parts[-1].endswith(TEMPLATE_SUFFIX)
        if rendered:
            parts[-1] = parts[-1].removesuffix(TEMPLATE_SUFFIX)
        planned.append(PlannedFile(source, target.joinpath(*parts), rendered))
    return planned


def create_project(name: str, *, template: str = "service", directory: str | Path | None = None) -> list[Path]:
    """Generate a project from a template; never overwrites anything.

    Every file is rendered in memory and every target checked before the first one is written,
    so a refusal or a template error leaves the disk untouched.

    Args:
        name: project and service name (``demo``, ``my-agent``).
        template: one of :func:`available_templates` (``service``, ``agent``, ``worker``).
        directory: where to put the project (default ``./{name}``); it may exist already.

    Returns:
        The written files, in order.

    Raises:
        ScaffoldError: bad name or template.
        FilesExistError: some target file exists already (nothing was written).
    """
    context = project_context(name)
    target = Path(directory) if directory is not None else Path(name)
    planned = plan_project(template, target, context)
    existing = [item.target for item in planned if item.target.exists() or item.target.is_symlink()]
    if existing:
        raise FilesExistError(existing)
    contents = [
        render(item.source.read_text(encoding="utf-8"), context, where=str(item.source)).encode()
        if item.rendered
        else item.source.read_bytes()
        for item in planned
    ]
    written: list[Path] = []
    for item, content in zip(planned, contents, strict=True):
        item.target.parent.mkdir(parents=True, exist_ok=True)
        with item.target.open("xb") as handle:  # "x": a file that appeared meanwhile is still not overwritten
            handle.write(content)
        written.append(item.target)
    return written
