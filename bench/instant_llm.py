"""A stand-in LLM for load tests: an OpenAI-compatible server that answers every chat at once with a fixed
reply, streamed token by token or whole, and counts tokens (llama.cpp's /tokenize) by four characters a token.

Usage: python bench/instant_llm.py --port 8089   (then RAGSVC_LLM_BASE_URL=http://127.0.0.1:8089/v1)

With it, what a load test measures is ragsvc's own cost per request, not a model's speed.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# 24 tokens, citing the first source as ragsvc's prompt asks.
REPLY = ("The documentation answers this in the cited section: follow the steps it lists there. [1]").split(
    " "
)
MODEL = "instant"


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


async def models(_: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})


async def tokenize(request: Request) -> JSONResponse:
    content = (await request.json()).get("content", "")
    return JSONResponse({"tokens": list(range(_tokens(content)))})


async def chat(request: Request) -> Response:
    body = await request.json()
    prompt = sum(_tokens(str(m.get("content") or "")) for m in body.get("messages", []))
    usage = {"prompt_tokens": prompt, "completion_tokens": len(REPLY), "total_tokens": prompt + len(REPLY)}
    created, chunk_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
    if not body.get("stream"):
        message = {"role": "assistant", "content": " ".join(REPLY)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse(
            {
                "id": chunk_id,
                "object": "chat.completion",
                "created": created,
                "model": MODEL,
                "choices": [choice],
                "usage": usage,
            }
        )

    def chunk(delta: dict, finish: str | None = None, with_usage: bool = False) -> str:
        event = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [] if with_usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if with_usage:
            event["usage"] = usage
        return f"data: {json.dumps(event)}\n\n"

    def events():
        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(REPLY):
            yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, finish="stop")
        yield chunk({}, with_usage=True)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(
    routes=[
        Route("/v1/models", models),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
