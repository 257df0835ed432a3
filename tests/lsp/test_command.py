"""`tideflow lsp` without the `lsp` extra: a clear message and exit 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from tideflow.cli import main


def test_without_pygls_it_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # as if pygls were not installed: importing it fails
    for name in [m for m in sys.modules if m.startswith(("pygls", "tideflow.lsp"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pygls", None)
    result = CliRunner().invoke(main, ["lsp"])
    assert result.exit_code == 2
    assert "pip install 'tideflow[lsp]'" in result.output


def test_a_missing_dependency_of_pygls_says_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """pygls present but one of its own dependencies gone (a partial install): the
    same advice, naming what is missing, not "a bug in tideflow"."""
    for name in [m for m in sys.modules if m.startswith(("pygls", "cattrs", "tideflow.lsp"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cattrs", None)
    result = CliRunner().invoke(main, ["lsp"])
    assert result.exit_code == 2
    assert "cattrs is missing" in result.output
    assert "pip install 'tideflow[lsp]'" in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _message(payload: dict[str, object]) -> bytes:
    body = json.dumps(payload).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_message(stream: socket.socket) -> dict[str, object]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = stream.recv(4096)
        assert chunk, "the server closed the connection"
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in header.split(b"\r\n"))
    length = int(fields[b"Content-Length"])
    while len(body) < length:
        chunk = stream.recv(4096)
        assert chunk, "the server closed the connection"
        body += chunk
    loaded: dict[str, object] = json.loads(body[:length])
    return loaded


def test_tcp_listens_on_the_loopback() -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tideflow", "lsp", "--tcp", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        assert f"127.0.0.1:{port}" in server.stderr.readline()
        deadline = time.monotonic() + 60  # a hang bound: start-up on a loaded machine
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the server never listened"
                time.sleep(0.05)  # polling for the listening socket, not a fixed wait
        with connection:
            connection.sendall(
                _message(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "initialize",
                        "params": {"processId": None, "rootUri": None, "capabilities": {}},
                    }
                )
            )
            reply = _read_message(connection)
        assert reply["id"] == 1
        result = reply["result"]
        assert isinstance(result, dict)
        assert result["serverInfo"]["name"] == "tideflow"
    finally:
        server.terminate()
        server.wait(timeout=60)
        if server.stderr is not None:
            server.stderr.close()
