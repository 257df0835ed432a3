"""The flow's picture for the dashboard: `tideflow graph`'s drawing, as inline SVG.

Drawing runs graphviz's `dot` (tens of milliseconds), so each picture is kept by
the hash of its IR document: a flow is drawn again only when its IR changes.
Each request then marks the job nodes with their last run's status (a CSS class),
which costs a regular-expression pass, not a drawing.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import graphviz

from tideflow.compiler.graph import render
from tideflow.compiler.ir import FlowIR

from .display import tone

__all__ = ["GraphCache", "GraphUnavailable", "ir_hash"]

_NODE: Final = re.compile(r'<g id="(node\d+)" class="node">(\s*<title>)job\.([^<]*)</title>')
_PROLOG: Final = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_SVG_TAG: Final = re.compile(r"<svg\b")


class GraphUnavailable(Exception):
    """The picture cannot be drawn here; the message says why."""


def ir_hash(document: Mapping[str, Any]) -> str:
    """A stable hash of an IR document (keys sorted, so the writer's order does not matter)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class GraphCache:
    """Pictures by IR hash, the newest `size` kept."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._pictures: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.drawn = 0  # how many times `dot` ran (the tests check the cache with it)

    def svg(self, digest: str, ir: FlowIR, statuses: Mapping[str, str] | None = None) -> str:
        """The flow's picture as an `<svg>` element, job nodes classed by `statuses`
        (status by job name). Raises GraphUnavailable without graphviz's `dot`."""
        with self._lock:
            picture = self._pictures.get(digest)
            if picture is None:
                picture = self._draw(ir)
                self._pictures[digest] = picture
                self.drawn += 1
                while len(self._pictures) > self._size:
                    self._pictures.popitem(last=False)
            else:
                self._pictures.move_to_end(digest)
        return _mark(picture, statuses or {})

    @staticmethod
    def _draw(ir: FlowIR) -> str:
        try:
            text = render(ir, "svg").decode("utf-8")
        except graphviz.ExecutableNotFound:
            raise GraphUnavailable(
                "graphviz's `dot` program is not installed on the dashboard's server"
            ) from None
        except (graphviz.CalledProcessError, subprocess.SubprocessError) as exc:
            raise GraphUnavailable(f"graphviz could not draw this flow: {exc}") from None
        text = _PROLOG.sub("", text, count=1)
        # drawn at its own size; the page's style shrinks it when it is wider than the page
        return _SVG_TAG.sub('<svg class="flow-graph"', text, count=1)


def _mark(picture: str, statuses: Mapping[str, str]) -> str:
    if not statuses:
        return picture

    def classed(match: re.Match[str]) -> str:
        node_id, title, escaped_name = match.groups()
        status = statuses.get(html.unescape(escaped_name))
        if status is None:
            return match.group(0)
        return (
            f'<g id="{node_id}" class="node job-node tone-{tone(status)}">'
            f"{title}job.{escaped_name} ({html.escape(status)})</title>"
        )

    return _NODE.sub(classed, picture)
