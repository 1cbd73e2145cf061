"""Body size limit as raw ASGI middleware: refuse before the body is read or parsed.

A declared Content-Length over the limit gets a 413 at once; a chunked body is
counted while it streams and cut off with a 413 as soon as it passes the limit.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: Any, max_body: int, on_refuse: Callable[[str, int], None] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.on_refuse = on_refuse  # (path, status) of each refusal: the service counts them as errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(scope, send, 400, "Content-Length is not a number", "Content-Length")
                return
            if size > self.max_body:
                await self._refuse(scope, send, 413, f"the body has {size} bytes; the limit is {self.max_body}")
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send, 413, f"the body passed the limit of {self.max_body} bytes")

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str, field: str = "body") -> None:
        if self.on_refuse is not None:
            self.on_refuse(scope.get("path", ""), status)
        payload = json.dumps({"error": message, "field": field}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
