"""The web dashboard, its JSON API (/api/, OpenAPI at /openapi.json) and /metrics.

Needs the `ui` extra (FastAPI, uvicorn, Jinja2, prometheus-client). `create_app`
builds the application over a state store; `serve` runs it inside an event loop
(`tideflow run --ui`); `tideflow serve` runs it on its own.
"""

from __future__ import annotations

from .app import DEFAULT_HOST, DEFAULT_PORT, UnsafeBindError, check_bind, create_app, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "UnsafeBindError", "check_bind", "create_app", "serve"]
