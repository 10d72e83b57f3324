"""A module that fails while being imported."""

raise RuntimeError("cli_broken refuses to be imported")
