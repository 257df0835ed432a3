"""`tideflow lsp`: the language server for `.flow` files, for editors."""

from __future__ import annotations

import click

from tideflow.cli.common import UsageProblem

__all__ = ["lsp_command"]


@click.command("lsp")
@click.option(
    "--tcp",
    "port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Listen on 127.0.0.1:PORT instead of talking over stdin and stdout.",
)
def lsp_command(port: int | None) -> None:
    """Run the language server (diagnostics, completion, hover, navigation, rename,
    outline, formatting, quick fixes) for an editor; see docs/editors.md."""
    try:  # lazy: pygls is the optional `lsp` extra
        from tideflow.lsp.server import build_server
    except ImportError as exc:
        # pygls, lsprotocol or one of theirs (cattrs, ...); a tideflow module is a bug
        if (exc.name or "tideflow").partition(".")[0] == "tideflow":
            raise
        raise UsageProblem(
            f"the language server needs the `lsp` extra ({exc.name} is missing): "
            "pip install 'tideflow[lsp]'"
        ) from None
    server = build_server()
    if port is None:
        server.start_io()
        return
    click.echo(f"tideflow language server on 127.0.0.1:{port} (Ctrl-C stops it)", err=True)
    # loopback only: the server reads any file an editor names
    server.start_tcp("127.0.0.1", port)
