"""`tideflow serve`: the web dashboard, its JSON API and /metrics over a state store."""

from __future__ import annotations

import click

from tideflow.cli.common import UsageProblem, state_option

__all__ = ["serve_command"]

_TOKEN_HELP = (
    "Token every request must show (Authorization: Bearer, or the /login form); "
    "required when --host is not a loopback address."
)


@click.command("serve")
@state_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything beyond the loopback needs --token.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--token", envvar="TIDEFLOW_UI_TOKEN", show_envvar=True, help=_TOKEN_HELP)
@click.option(
    "--timezone", "zone", metavar="ZONE", help="Show times in this zone (default: the server's)."
)
def serve_command(
    state_url: str | None, host: str, port: int, token: str | None, zone: str | None
) -> None:
    """Serve the dashboard: flows, runs, schedules, consumers, and /metrics for Prometheus."""
    try:  # lazy: the dashboard is the optional `ui` extra (uvicorn, fastapi), heavy
        import uvicorn

        from tideflow.runtime.store import StoreError
        from tideflow.web.app import UnsafeBindError, check_bind, create_app, listening_socket
    except ImportError as exc:
        raise UsageProblem(
            f"the dashboard needs the `ui` extra ({exc.name} is missing): "
            "pip install 'tideflow[ui]'"
        ) from None
    try:
        check_bind(host, token)
    except UnsafeBindError as exc:
        raise UsageProblem(str(exc)) from None
    try:
        app = create_app(state_url, token=token, timezone=zone)
    except StoreError as exc:
        raise UsageProblem(str(exc)) from None
    except ValueError as exc:
        raise UsageProblem(f"{exc} (use an IANA name such as Europe/Lisbon)") from None
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise UsageProblem(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"tideflow dashboard on http://{shown}:{bound}/ (Ctrl-C stops it)", err=False)
    click.echo(f"state store: {app.state.dashboard.store.location}")
    if token:
        click.echo("requests need the token (Authorization: Bearer, or the /login form)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
