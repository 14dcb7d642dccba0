"""Keeps the page's own handlers private: an ASGI middleware in front of the web server's routes.

Gradio serves every event handler by name (``/gradio_api/call/<name>``, ``/gradio_api/run/<name>``)
and by number (``/gradio_api/queue/join`` and ``/gradio_api/run/predict`` with an ``fn_index``),
the page's private ones included. This middleware hands each such request to a predicate (built by
the page, which knows its handlers) with the name in the path and the JSON body, and answers 403
to the ones it refuses, before the server parses or queues anything. It imports no web framework
beyond the ASGI protocol.
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable

#: Paths that run a handler, and the handler name they carry (None: the body's fn_index says which).
_RUN_PATHS = re.compile(r"^(?:.*)/gradio_api/(?:queue/join|(?:run|api|call(?:/v2)?)/(?P<name>[^/]+))/?$")
#: Larger request bodies than this are not page events; the server's own limits handle uploads.
_MAX_BODY = 2 * 2**20

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class PageOnly:
    """ASGI middleware: POSTs that run a handler go through only if ``allowed(name, body)`` says so."""

    def __init__(self, app: Any, allowed: Callable[[str | None, dict], bool]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        match = _RUN_PATHS.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # the client went away: let the server see it
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False) and size <= _MAX_BODY
        body = b"".join(chunks)
        try:
            data = json.loads(body) if body else {}
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or size > _MAX_BODY or not self.allowed(match.group("name"), data):
            await _refuse(send)
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send) -> None:
    payload = json.dumps({"error": "This handler belongs to the page and is not part of the API. The API is "
                                   "/fit and /estimate (see the README)."}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
