"""A real OpenAI-compatible /v1/embeddings server on loopback, with injectable faults.

Vectors are a deterministic function of the text (a seeded Gaussian from its
sha256), so results can be compared across runs. Every text the server
embedded is counted, and every request's headers are kept, so tests can check
what the client sent. Faults are consumed one per request from `faults`:
"429", "500", "timeout", "truncated", "wrongdim", "echo401" (a 401 that
repeats the Authorization header back), or None for a normal answer. When
`always` is set, every request gets that fault.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


def vector_for(text: str, dim: int) -> np.ndarray:
    seed = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], 16)
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class FakeEmbeddingServer:
    def __init__(self, dim: int = 32, *, api_key: str | None = None, retry_after: str = "0",
                 stall: float = 2.0, work_per_text: float = 0.0, port: int = 0) -> None:
        self.dim = dim
        self.api_key = api_key
        self.retry_after = retry_after
        self.stall = stall
        self.work_per_text = work_per_text  # seconds of simulated inference per text
        self.faults: collections.deque = collections.deque()
        self.always: str | None = None
        self.embedded: collections.Counter = collections.Counter()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.handle_error = lambda request, address: None  # clients killed mid-request are expected
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def texts_embedded(self) -> int:
        return sum(self.embedded.values())

    def __enter__(self) -> FakeEmbeddingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next_fault(self) -> str | None:
        with self.lock:
            if self.always:
                return self.always
            return self.faults.popleft() if self.faults else None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = json.loads(raw)
                with server.lock:
                    server.requests.append({"headers": dict(self.headers), "body": req,
                                            "time": time.monotonic()})
                if self.path != "/v1/embeddings":
                    return self._send(404, b'{"error": {"message": "unknown route"}}')
                fault = server._next_fault()
                if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, b'{"error": {"message": "bad key"}}')
                if fault == "429":
                    return self._send(429, b'{"error": {"message": "slow down"}}',
                                      {"Retry-After": server.retry_after})
                if fault == "500":
                    return self._send(500, b'{"error": {"message": "boom"}}')
                if fault == "echo401":
                    echo = json.dumps({"error": {"message": f"rejected {self.headers.get('Authorization')}"}})
                    return self._send(401, echo.encode())
                if fault == "timeout":
                    time.sleep(server.stall)
                texts = req["input"]
                if server.work_per_text:
                    time.sleep(server.work_per_text * len(texts))
                dim = server.dim - 1 if fault == "wrongdim" else server.dim
                data = [{"object": "embedding", "index": i, "embedding": vector_for(t, dim).tolist()}
                        for i, t in enumerate(texts)]
                with server.lock:
                    server.embedded.update(texts)
                body = json.dumps({"object": "list", "data": data, "model": req.get("model")}).encode()
                if fault == "truncated":
                    return self._send(200, body[: len(body) // 2])
                try:
                    self._send(200, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve in a process of its own (benchmarks: the client must not share the server's GIL).

    Prints the base URL on stdout once listening, then serves until killed.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--work-per-text", type=float, default=0.0)
    args = parser.parse_args(argv)
    server = FakeEmbeddingServer(dim=args.dim, work_per_text=args.work_per_text)
    print(server.base_url, flush=True)
    sys.stdout.close()
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
