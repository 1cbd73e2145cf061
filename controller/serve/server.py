"""Running the app on uvicorn with a socket bound first, so `--port 0` can say which port it got."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any


def serve_forever(app: Any, host: str, port: int, *, log_level: str = "warning") -> int:
    """Bind, print ``serving on http://HOST:PORT`` (flushed: scripts wait for it), run until SIGTERM/SIGINT."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle + delayed ACK add ~40 ms to every response (headers and body are separate writes)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from controller.errors import InvalidInput

        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}", field="--port", value=port) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"serving on http://{host}:{bound}", flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    print("stopped", file=sys.stderr, flush=True)
    return 0
