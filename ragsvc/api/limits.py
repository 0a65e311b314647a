"""What a caller learns of their limits on every HTTP response: the `X-RateLimit-*` headers the service
layer left in the request's budget note (ragsvc.service.metering). A refused request (429) carries its own."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragsvc.service.metering import noting


class RateLimitHeaders:
    """ASGI middleware: one budget note per HTTP request, its headers added when the response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with noting() as note:

            async def send_with_limits(message: Message) -> None:
                if message["type"] == "http.response.start" and note.headers:
                    headers = MutableHeaders(scope=message)
                    for name, value in note.headers.items():
                        if name not in headers:
                            headers[name] = value
                await send(message)

            await self.app(scope, receive, send_with_limits)


def install_rate_limit_headers(app: FastAPI) -> None:
    app.add_middleware(RateLimitHeaders)
