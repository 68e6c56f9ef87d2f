"""Fixtures: a real `textrnn serve-model` in a subprocess on a free local port, a plain HTTP client for it,
and the tiny pipeline's bundle and test texts."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from textrnn.io import read_folder

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def predict(self, payload) -> tuple[int, dict]:
        return self.request("POST", "/v1/predict", json.dumps(payload, ensure_ascii=False).encode(),
                            {"Content-Type": "application/json"})

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, by the process id, and its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_server(bundle: Path, log: Path, *options: str, python: str = sys.executable,
                 env: dict | None = None, timeout: float = 60) -> Server:
    """Start the server (its log in a file: a pipe nobody reads would fill and stall it) and wait until
    it listens and answers /healthz."""
    command = [python, "-m", "textrnn.cli", "serve-model", "--model", str(bundle), "--port", "0", *options]
    handle = open(log, "wb")  # noqa: SIM115 - the child writes to it for its whole life
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    handle.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        found = LISTENING.search(log.read_text(encoding="utf-8", errors="replace"))
        if found:
            server = Server(process, int(found.group(1)), log)
            try:
                if server.request("GET", "/healthz")[0] == 200:
                    return server
            except OSError:
                pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start within {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def bundle(built) -> Path:
    return Path(built.paths.export)


@pytest.fixture(scope="module")
def test_texts(built) -> list[str]:
    return read_folder(Path(built.paths.clean) / "test", columns=["text"]).column("text").to_pylist()


@pytest.fixture(scope="module")
def servers():
    """start(bundle, log, *options, ...) -> Server; every server started is stopped at the end."""
    started: list[Server] = []

    def start(*args, **kwargs) -> Server:
        started.append(start_server(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)
