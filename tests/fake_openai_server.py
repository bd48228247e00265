"""A scriptable fake OpenAI-compatible chat-completions server for tests (127.0.0.1 only).

By default it answers like a real server with ``logprobs.content[0].top_logprobs``, taking the
alternatives from a marker in the prompt: ``##85=0.7;90=0.2;CODE=0.05##`` yields those tokens with
those probabilities (the rest of the mass goes to the token "Hello"). A test can instead queue
failures (status codes, garbled bodies, requests that hang until the client times out) that are
served first, and can require a key. Every request is recorded (headers and JSON body) and the peak
number of concurrent requests kept. Nothing here depends on the clock: concurrency is observed by
holding requests at a gate until enough are in flight together, not by sleeping.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_MARKER = re.compile(r"##(.*?)##", re.DOTALL)


@dataclass
class Scripted:
    """One queued response: status, body (bytes), extra headers; ``hang`` never answers (until the
    server closes), so the client's own timeout is what ends the request."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


def top_logprobs_for(prompt: str) -> list[dict[str, Any]]:
    match = _MARKER.search(prompt)
    pairs: list[tuple[str, float]] = []
    if match:
        for part in match.group(1).split(";"):
            token, probability = part.rsplit("=", 1)
            pairs.append((token, float(probability)))
    rest = 1.0 - sum(probability for _, probability in pairs)
    if rest > 1e-9:
        pairs.append(("Hello", rest))
    return [{"token": token, "logprob": math.log(probability), "bytes": list(token.encode())}
            for token, probability in pairs]


def completion_body(prompt: str, model: str) -> dict[str, Any]:
    top = top_logprobs_for(prompt)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,  # a fixed value: nothing in a test may depend on the clock
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": top[0]["token"]},
            "logprobs": {"content": [{**top[0], "top_logprobs": top}], "refusal": None},
            "finish_reason": "length",
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


class FakeOpenAIServer:
    """``with FakeOpenAIServer() as server: server.base_url`` -> "http://127.0.0.1:PORT/v1".

    ``hold_until_in_flight=k`` holds every request until k requests are in flight together; from
    then on the gate stays open and ``gate_opened_by_concurrency`` is True. A client that never has
    k requests open at once would wait forever, so after ``gate_guard_s`` the gate opens anyway
    (a guard against a hung test, not a measurement) and the flag stays False.
    """

    def __init__(self, required_key: str | None = None, hold_until_in_flight: int | None = None,
                 gate_guard_s: float = 60.0):
        self.required_key = required_key
        self.hold_until_in_flight = hold_until_in_flight
        self.gate_guard_s = gate_guard_s
        self.gate_opened_by_concurrency = False
        self.queue: list[Scripted] = []
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._gate = threading.Event()
        if hold_until_in_flight is None:
            self._gate.set()
        self._closing = threading.Event()  # releases hanging requests when the server stops
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *responses: Scripted) -> None:
        with self._lock:
            self.queue.extend(responses)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing.set()
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()

    def _next(self) -> Scripted | None:
        with self._lock:
            return self.queue.pop(0) if self.queue else None

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _leave_flight(self) -> None:
                # A request stops counting as in flight *before* its response goes out: once the client
                # has read it, it may send the next request, which must not overlap this one's count.
                with fake._lock:
                    if getattr(self, "_in_flight", False):
                        fake.in_flight -= 1
                        self._in_flight = False

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self._leave_flight()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with fake._lock:
                    fake.in_flight += 1
                    fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
                    self._in_flight = True
                    if (fake.hold_until_in_flight is not None and not fake._gate.is_set()
                            and fake.in_flight >= fake.hold_until_in_flight):
                        fake.gate_opened_by_concurrency = True
                        fake._gate.set()
                fake._gate.wait(fake.gate_guard_s)
                try:
                    self._answer(raw)
                finally:
                    self._leave_flight()

            def _answer(self, raw: bytes) -> None:
                authorization = self.headers.get("Authorization")
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "json": payload})
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "no such route"}}')
                    return
                if fake.required_key is not None and authorization != f"Bearer {fake.required_key}":
                    # Like some real providers, echo what was received: the client must not show it.
                    message = {"error": {"message": f"Incorrect API key provided: {authorization}"}}
                    self._send(401, json.dumps(message).encode())
                    return
                scripted = fake._next()
                if scripted is not None:
                    if scripted.hang:
                        fake._closing.wait()
                        return  # the client left long ago; nobody reads an answer
                    if scripted.status != 200 or scripted.body is not None:
                        body = scripted.body if scripted.body is not None else b'{"error": {"message": "scripted"}}'
                        self._send(scripted.status, body, scripted.headers)
                        return
                prompt = payload["messages"][-1]["content"]
                self._send(200, json.dumps(completion_body(prompt, payload.get("model", ""))).encode())

        return Handler
