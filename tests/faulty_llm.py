"""A stand-in OpenAI-compatible server for LLM faults the real llama-server cannot produce on demand:
hanging without a word, failing with 5xx, or cutting a stream off mid-reply. Every other test uses the real
llama-server; this one exists only to inject faults."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Fault = Literal["hang", "error", "cut_stream", "flaky"]


class JSONHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON; the stand-in servers of the tests build on it."""

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FaultyLLMServer:
    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.calls = 0
        server = self

        class Handler(JSONHandler):
            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": "faulty", "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.endswith("/tokenize"):
                    self._json(404, {"error": "no tokenizer"})
                    return
                server.calls += 1
                if server.fault == "hang":
                    time.sleep(30)
                    return
                if server.fault == "error" or (server.fault == "flaky" and server.calls == 1):
                    self._json(500, {"error": {"message": "model crashed", "type": "server_error"}})
                    return
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    if server.fault == "cut_stream":
                        self._chunks(("The ", "answer "), None)
                        # The connection drops mid-reply: no finish_reason, no [DONE].
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self._chunks(("Recovered ", "answer."), "stop")
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                reply = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "faulty",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Recovered answer."},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
                }
                self._json(200, reply)

            def _chunks(self, words: tuple[str, ...], finish: str | None) -> None:
                for i, word in enumerate(words):
                    last = i == len(words) - 1
                    chunk = {
                        "id": "x",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": "faulty",
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"content": word},
                                "finish_reason": finish if last else None,
                            }
                        ],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultyLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
