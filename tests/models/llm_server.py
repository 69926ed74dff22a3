"""A real `python -m llama_cpp.server` on the bundled SmolLM2 GGUF, on a free localhost port, started and always
stopped; used by tests/models/test_llm_server.py and bench/enrich.py."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from models.llm import bundled_gguf_path

MODEL_ALIAS = "smollm2"  # the name clients send as `model`
READY_TIMEOUT_S = 60.0  # model load is about a second on an idle host; a busy 2-core host is slower
PORT_TRIES = 3  # a free port found by probing can be taken before the server binds it
# uvicorn's access log: `INFO:     127.0.0.1:54321 - "POST /v1/chat/completions HTTP/1.1" 200 OK`
ACCESS_LINE = re.compile(r'(?P<host>[\d.]+):(?P<port>\d+) - "POST /v1/chat/completions HTTP/[\d.]+" (?P<status>\d{3})')


class ServerError(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # ends in /v1, as OpenAICompatible wants it
    log_path: Path  # the server's stdout and stderr, written unbuffered
    pid: int

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def chat_requests(self, since: int = 0) -> list[tuple[int, int]]:
        """(client port, HTTP status) of every chat completion the server answered after byte `since` of its log."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
        return [(int(match["port"]), int(match["status"])) for match in ACCESS_LINE.finditer(text)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def llama_server(
    log_path: Path,
    *,
    n_threads: int = 1,
    n_ctx: int = 1024,
    model_path: Path | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[LlamaServer]:
    """Start llama_cpp.server, wait until GET /v1/models answers, yield it, and stop it however the block ends.

    llama_cpp.server (llama-cpp-python 0.3.36) runs one completion at a time: concurrent requests are accepted
    and queue behind one lock, so more client concurrency overlaps only the HTTP round trips.
    """
    last_error: ServerError | None = None
    for _ in range(PORT_TRIES):
        port = free_port()
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model_path or bundled_gguf_path()),
            "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
            "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads), "--verbose", "False",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})  # access lines as they happen
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            try:
                _wait_ready(process, base_url, log_path, ready_timeout_s)
            except ServerError as error:
                if "address already in use" not in str(error).lower():
                    raise
                last_error = error
                continue
            yield LlamaServer(base_url, log_path, process.pid)
            return
        finally:
            _stop(process)
    raise last_error or ServerError("llama_cpp.server never started")


def _wait_ready(process: subprocess.Popen, base_url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise ServerError(f"llama_cpp.server exited with status {process.returncode} before answering; "
                              f"its log ({log_path}) ends:\n{_tail(log_path)}")
        try:
            if httpx.get(base_url + "/models", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"llama_cpp.server did not answer {base_url}/models within {timeout_s:.0f} s "
                              f"(a loaded host? raise ready_timeout_s); its log ({log_path}) ends:\n{_tail(log_path)}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError as error:
        return f"(unreadable: {error})"
