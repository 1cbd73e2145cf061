"""An OpenAI-compatible /v1/embeddings server that answers SciFact's golden queries with their
precomputed vectors (python -m tests.e2e.query_vectors_server --port P --model NAME=queries.npy ...).

No MiniLM or E5 model can be downloaded here, yet the search service embeds query *text*. The
simulated users only ever ask SciFact's 300 test queries, whose vectors were computed with the real
models (shared data README): this server returns exactly those rows, by `model` name, and refuses
any other text. It runs as its own process so the service talks to it over real HTTP.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data", required=True, help="the SciFact directory (queries.jsonl, query_ids.txt)")
    p.add_argument("--model", action="append", default=[], help="NAME=path/to/queries.npy")
    args = p.parse_args()
    data = Path(args.data)
    ids = (data / "query_ids.txt").read_text().split()
    texts = {}
    for line in (data / "queries.jsonl").read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            texts[q["text"]] = q["_id"]
    row = {qid: i for i, qid in enumerate(ids)}
    models = {name: np.load(path) for name, path in (m.split("=", 1) for m in args.model)}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a) -> None:
            pass

        def _send(self, code: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            vectors = models.get(req.get("model"))
            if vectors is None:
                return self._send(404, {"error": {"message": f"unknown model {req.get('model')!r}"}})
            out = []
            for i, text in enumerate(req["input"]):
                qid = texts.get(text)
                if qid not in row:
                    return self._send(400, {"error": {"message": f"not a golden query: {text[:60]!r}"}})
                out.append({"object": "embedding", "index": i, "embedding": vectors[row[qid]].tolist()})
            self._send(200, {"object": "list", "data": out, "model": req["model"]})

    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    httpd.daemon_threads = True
    print("ready", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
