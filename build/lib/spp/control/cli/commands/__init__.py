"""Command implementations, one module per process family.

Each module turns a cleaned sub-command line into REST calls through
:class:`~spp.control.cli.session.Session` and prints SPP's output lines. Refusals and failures are
raised as :class:`~spp.control.cli.common.CliError` / :class:`~spp.control.cli.client.CtlError`;
the shell prints them and counts them. Status renderers are pure ``dict -> list[str]`` functions
so they can be tested without a server.
"""
