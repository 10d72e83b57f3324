"""``shipkit new``: create a project from a template (rendering lives in :mod:`shipkit.cli.scaffold`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shipkit.cli._common import EXIT_USAGE
from shipkit.cli.scaffold import create_project, project_context
from shipkit.errors import ScaffoldError

__all__ = ["new_command"]


@click.command("new")
@click.argument("name")
@click.option(
    "--template",
    type=click.Choice(["service", "agent", "worker"]),
    default="service",
    show_default=True,
    help="service: request-reply with a model and a mutation event; agent: being registry and ship_config "
    "watch; worker: a job worker.",
)
@click.option(
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to create the project.  [default: ./NAME]",
)
def new_command(name: str, template: str, directory: Path | None) -> None:
    """Create a project NAME from a template, with tests that pass out of the box.

    Existing files are never overwritten: if any would be, nothing is written.

    \b
    Examples:
      shipkit new demo
      shipkit new scout --template agent
      shipkit new thumbnails --template worker --directory services/thumbnails
    """
    target = directory if directory is not None else Path(name)
    try:
        written = create_project(name, template=template, directory=target)
        package = project_context(name)["package"]
    except ScaffoldError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    for path in written:
        click.echo(f"  created {path}")
    steps = [
        (f"cd {target}", ""),
        ("pytest", "the generated tests, each against its own embedded server"),
        (f"shipkit run {package}.service", "starts a local server if none is running"),
        (f"shipkit inspect {package}.service", "what it subscribes to and provisions"),
    ]
    width = max(len(command) for command, _ in steps)
    click.echo("\nNext steps:")
    for command, comment in steps:
        click.echo(f"  {command:<{width}}  # {comment}" if comment else f"  {command}")
