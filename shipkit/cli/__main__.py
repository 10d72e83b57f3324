"""``python -m shipkit.cli``: the ``shipkit`` command."""

from shipkit.cli.main import main

if __name__ == "__main__":  # pragma: no cover
    main()
