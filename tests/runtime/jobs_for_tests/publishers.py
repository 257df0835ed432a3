"""A real publisher for tests: appends each message as a JSON line to a file."""

from __future__ import annotations

import json
import os
from pathlib import Path


class FilePublisher:
    """Batches messages and appends them to `path` on flush (one JSON line each)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.pending: list[dict[str, object]] = []

    def publish(self, topic: str, value: bytes, key: bytes | None) -> None:
        self.pending.append(
            {
                "topic": topic,
                "value": value.decode(),
                "key": None if key is None else key.decode(),
                "pid": os.getpid(),
            }
        )

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(json.dumps(m) + "\n" for m in self.pending)
        with self.path.open("a") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        self.pending.clear()

    def close(self) -> None:
        self.pending.clear()


def make_file_publisher(flow_ir_json: str, topic: str) -> FilePublisher:
    """The publisher factory: the `path` option of the topic's broker names the file.

    `flow_ir_json` is IR JSON (tideflow.compiler.irjson); it is read by hand here so
    that worker processes need not import the compiler."""
    nodes = {node["id"]: node["record"] for node in json.loads(flow_ir_json)["nodes"]}
    broker = nodes[f"broker:{nodes[f'topic:{topic}']['broker']}"]
    return FilePublisher(broker["options"]["path"])


def read_messages(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
