"""The built-in notifiers: `webhook` (HTTP POST of the JSON event) and `command`.

Both receive `NotifyEvent.as_dict()`. Neither puts a `secret()` value in what it
raises: the webhook's URL and headers may be secrets, so errors name the notify
block and the HTTP status, never the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from . import builtin_options
from .api import BackendError, BackendRegistry, Notifier, NotifyEvent, hookimpl

if TYPE_CHECKING:
    import httpx

__all__ = ["CommandNotifier", "WebhookNotifier", "tideflow_register_notifiers"]

USER_AGENT = "tideflow-notify/1"


class WebhookNotifier(Notifier):
    """HTTP POST of a JSON event."""

    name = "webhook"
    options = builtin_options.WEBHOOK_NOTIFIER

    def __init__(self, config: Any, *, context: Any = None) -> None:
        super().__init__(config, context=context)
        self._client: httpx.AsyncClient | None = None

    async def send(self, event: NotifyEvent) -> None:
        # lazy: httpx costs every process that loads the plugins (consumer instances
        # among them) 3 MB; only a process that sends a webhook needs it
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=float(self.config["timeout"]))
        headers = {"User-Agent": USER_AGENT, **dict(self.config.get("headers") or {})}
        where = f'notify "{self.context.block}"' if self.context.block else "webhook"
        try:
            response = await self._client.post(
                self.config["url"], json=event.as_dict(), headers=headers
            )
        except httpx.HTTPError as exc:
            # the message of an httpx error can hold the URL; keep only its kind
            raise BackendError(f"{where}: the request failed ({type(exc).__name__})") from None
        if response.status_code >= 300:
            raise BackendError(f"{where}: the server answered HTTP {response.status_code}")

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


class CommandNotifier(Notifier):
    """A program fed the JSON event on its standard input."""

    name = "command"
    options = builtin_options.COMMAND_NOTIFIER

    async def send(self, event: NotifyEvent) -> None:
        argv = [str(part) for part in self.config["command"]]
        where = f'notify "{self.context.block}"' if self.context.block else "command notifier"
        quiet = bool(self.config.get("quiet"))
        output = asyncio.subprocess.DEVNULL if quiet else asyncio.subprocess.PIPE
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=output,
                stderr=output,
                cwd=str(self.context.base_dir),
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"{where}: cannot start `{argv[0]}`: {exc.strerror}") from None
        payload = json.dumps(event.as_dict()).encode()
        try:
            _, stderr = await asyncio.wait_for(
                process.communicate(payload), float(self.config["timeout"])
            )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise BackendError(
                f"{where}: `{argv[0]}` ran longer than {self.config['timeout']:g}s"
            ) from None
        if process.returncode != 0:
            tail = (stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
            detail = f": {' / '.join(tail)}" if tail else ""
            raise BackendError(f"{where}: `{argv[0]}` exited with {process.returncode}{detail}")

    async def aclose(self) -> None:
        return None


@hookimpl
def tideflow_register_notifiers(registry: BackendRegistry[Notifier]) -> None:
    """Register the `webhook` and `command` notifiers."""
    registry.register(WebhookNotifier)
    registry.register(CommandNotifier)
