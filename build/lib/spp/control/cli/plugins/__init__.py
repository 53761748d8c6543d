"""Command plugins for ``load_cmd NAME``.

A plugin is a module ``NAME.py`` here defining ``do_NAME(self, args)`` (and optionally
``complete_NAME`` / ``help_NAME``); ``load_cmd`` binds them to the running shell. Raise
:class:`spp.control.cli.common.CliError` to report a failure the way built-in commands do.
"""
