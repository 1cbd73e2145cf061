"""The fake OpenAI-compatible embedding server in its own process (python -m tests.serve.embedder_process).

Latency tests time requests in the test process; a server thread there would compete with the
client for the GIL and blur what is measured. Prints `ready` once listening on --port.
"""

from __future__ import annotations

import argparse
import time

from tests.embed.fake_openai import FakeEmbeddingServer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds per embedded text")
    p.add_argument("--fault", default=None, help="a fault of fake_openai answered to every request, e.g. 500")
    args = p.parse_args()
    server = FakeEmbeddingServer(dim=args.dim, work_per_text=args.sleep, port=args.port)
    server.always = args.fault
    with server:
        print("ready", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
