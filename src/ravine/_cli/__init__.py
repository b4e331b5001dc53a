"""Subcommands of the ``ravine`` command, one module each (see ``ravine.cli``)."""
