"""The ``shipkit`` click group, with every command group registered on it."""

from __future__ import annotations

import click

from shipkit.cli.agents import agents
from shipkit.cli.dashboard import dashboard_command
from shipkit.cli.docs import docs
from shipkit.cli.jobs import jobs
from shipkit.cli.new import new_command
from shipkit.cli.run import inspect_command, run_command
from shipkit.cli.server import server_command

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shipkit", prog_name="shipkit")
def main() -> None:
    """shipkit: declarative agent services over NATS."""


for _command in (run_command, inspect_command, new_command, server_command, jobs, agents, dashboard_command, docs):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover - `python -m shipkit.cli.main`
    main()
