"""The ``shipkit`` command line: a thin skin that parses options and calls the library.

One module per command group, each registered on :func:`main` in :mod:`shipkit.cli.main`:

- :mod:`shipkit.cli.run`: ``shipkit run`` and ``shipkit inspect``;
- :mod:`shipkit.cli.new`: ``shipkit new`` (rendering in :mod:`shipkit.cli.scaffold`);
- :mod:`shipkit.cli.server`: ``shipkit server``;
- :mod:`shipkit.cli.jobs`: ``shipkit jobs ...``.

Exit codes (:mod:`shipkit.cli._common`): 0 clean stop, 1 the server died while running, 2 usage
error, 3 startup failure.
"""

from shipkit.cli._common import EXIT_SERVER_DIED, EXIT_STARTUP_FAILURE, EXIT_USAGE
from shipkit.cli.main import main

__all__ = ["EXIT_SERVER_DIED", "EXIT_STARTUP_FAILURE", "EXIT_USAGE", "main"]
