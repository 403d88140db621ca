"""Subcommands of the ``thinkctl`` command line, one module each (see :mod:`thinkctl.cli`)."""
