"""``rt2-ros serve``: an OpenAI-compatible server for one GPU host.

It serves the subset of the chat-completions protocol the ``remote`` backend
speaks (see :mod:`rt2_ros.policy.openai_protocol`) from a local model that
has ``act_batch`` / ``answer`` (the ``transformers`` backend):

- ``POST /v1/chat/completions`` — a robot prompt (the profile's action
  prompt, e.g. ``Q: what action should the robot take to ...? A:``) gets
  constrained action decoding, batched with other robots' requests into one
  forward pass per decoding step; any other prompt gets a free-text answer
  (VQA) from the same weights;
- ``GET /v1/models`` — the one served model;
- ``GET /v1/rt2/action_space`` — extension: the action token ids per position
  (what a client puts into ``allowed_token_ids`` and how it reads ids back);
- ``GET /health`` — liveness and batching counters (no auth: for load balancers).

Responses carry an ``rt2`` extension object (``kind``, ``tokens``,
``token_ids``, ``action``, ``plan``, ``batch_size``, ``timings_ms``);
docs/remote_serving.md documents it.  Errors are OpenAI-style JSON bodies
``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx status.

One thread (the :class:`~rt2_ros.policy.batching.BatchWorker`) owns the
model; request handlers only parse, validate and wait.  Bodies are parsed as
JSON and images with PIL's JPEG/PNG/WebP decoders: nothing is unpickled.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import re
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rt2_ros.action_language import PROMPTS, format_action_text
from rt2_ros.errors import ConfigError, Rt2RosError
from rt2_ros.policy.base import PolicyOutput, check_instruction
from rt2_ros.policy.batching import BatchWorker, QueueFullError, WorkerStoppedError
from rt2_ros.policy.openai_protocol import (ActionSpace, ApiError, decode_image_data_url,
                                            error_body, parse_chat_request)
from rt2_ros.validation import expect_int, expect_number, expect_str

__all__ = ["ServedModel", "ServerSettings", "create_app", "RunningServer", "prompt_kind"]

ACT = "act"
ANSWER = "answer"


class ServedModel(Protocol):
    """What the server needs from a model (``TransformersPolicy`` provides it)."""

    embodiment: Any   # rt2_ros.action_language.Embodiment
    scheme: Any       # rt2_ros.action_language.TokenScheme

    def act_batch(self, images: Sequence[np.ndarray], instructions: Sequence[str]
                  ) -> list[PolicyOutput]:
        """One legal action per (image, instruction), computed together."""

    def answer(self, image: np.ndarray, question: str, max_new_tokens: int) -> str:
        """Free-text answer to ``question`` about ``image``."""


@dataclass(frozen=True)
class ServerSettings:
    """Limits and identity of one server.  Validated on construction (ConfigError)."""

    model_name: str                       # what clients put in "model"
    profile: str = "rt2"                  # which action prompt means "robot": rt2 | openvla
    api_key: str | None = None            # None: no auth (bind to localhost then)
    max_batch: int = 8                    # robots per forward pass
    max_wait_ms: float = 5.0              # how long the oldest request waits for company
    max_queue: int = 64                   # queued requests beyond which 503 "busy" is answered
    max_body_bytes: int = 16 * 1024 * 1024
    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_answer_tokens: int = 256          # cap on max_tokens for free-text answers
    default_answer_tokens: int = 32       # free-text max_tokens when the request has none
    request_timeout_s: float = 60.0       # a request not answered by then gets 504

    def __post_init__(self) -> None:
        expect_str("model_name", self.model_name, allow_empty=False)
        expect_str("profile", self.profile, choices=tuple(PROMPTS))
        if self.api_key is not None:
            expect_str("api_key", self.api_key, allow_empty=False)
        expect_int("max_batch", self.max_batch, low=1, high=1024)
        expect_number("max_wait_ms", self.max_wait_ms, low=0.0, high=10_000.0)
        expect_int("max_queue", self.max_queue, low=1)
        expect_int("max_body_bytes", self.max_body_bytes, low=1024)
        expect_int("max_image_bytes", self.max_image_bytes, low=1)
        expect_int("max_image_pixels", self.max_image_pixels, low=1)
        expect_int("max_answer_tokens", self.max_answer_tokens, low=1)
        expect_int("default_answer_tokens", self.default_answer_tokens, low=1,
                   high=self.max_answer_tokens)
        expect_number("request_timeout_s", self.request_timeout_s, low=0.0, low_inclusive=False)


def _prompt_pattern(template: str) -> re.Pattern[str]:
    head, tail = template.split("{instruction}")
    return re.compile(re.escape(head) + r"(?P<instruction>.+)" + re.escape(tail), re.DOTALL)


_PROMPT_PATTERNS = {profile: _prompt_pattern(template) for profile, template in PROMPTS.items()}


def prompt_kind(prompt: str, profile: str) -> tuple[str, str]:
    """Return ``("act", instruction)`` for the profile's action prompt, else ``("answer", prompt)``.

    The other profile's action prompt is refused (ApiError 400): a robot
    configured for another profile would get actions in the wrong format.
    """
    for name, pattern in _PROMPT_PATTERNS.items():
        match = pattern.fullmatch(prompt)
        if match is None:
            continue
        if name != profile:
            raise ApiError(400, f"prompt: this is the {name} action prompt but this server serves "
                           f"the {profile} profile (prompt {PROMPTS[profile]!r})",
                           code="wrong_profile", param="messages[0].content")
        return ACT, match.group("instruction")
    return ANSWER, prompt


def _json_number(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return float(value)


@dataclass
class _Work:
    """Payload handed to the model thread."""

    image: np.ndarray
    text: str            # the instruction (act) or the question (answer)
    prompt: str          # the full prompt, for usage counting
    max_new_tokens: int = 0


class _Service:
    """State shared by the routes: the model worker, settings and counters."""

    def __init__(self, model: ServedModel, settings: ServerSettings) -> None:
        model_profile = getattr(model, "profile", settings.profile)
        if model_profile != settings.profile:
            raise ConfigError(f"profile: the model speaks the {model_profile} profile, the server "
                              f"settings say {settings.profile}")
        self.model = model
        self.settings = settings
        self.action_space = ActionSpace.from_scheme(model.scheme, model.embodiment)
        self._action_ids = set(self.action_space.union())
        self.created = int(time.time())
        self.worker = BatchWorker(self._run_batch, max_batch=settings.max_batch,
                                  max_wait_s=settings.max_wait_ms / 1000.0,
                                  max_queue=settings.max_queue, batchable={ACT})
        self._errors = 0
        self._lock = threading.Lock()

    # runs on the worker thread only: the model and its tokenizer are used there alone
    def _run_batch(self, kind: str, work: list[_Work]) -> list[tuple[Any, int, int]]:
        tokenizer = getattr(self.model, "tokenizer", None)

        def count(text: str) -> int:
            if tokenizer is None or not text:
                return 0
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        if kind == ACT:
            outputs = self.model.act_batch([w.image for w in work], [w.text for w in work])
            results = []
            for w, out in zip(work, outputs):
                completion = count(out.text) if out.plan else len(out.tokens)
                results.append((out, count(w.prompt), completion))
            return results
        answers = []
        for w in work:
            text = self.model.answer(w.image, w.text, w.max_new_tokens)
            answers.append((text, count(w.prompt), count(text)))
        return answers

    def count_error(self) -> None:
        with self._lock:
            self._errors += 1

    def health(self) -> dict[str, Any]:
        with self._lock:
            errors = self._errors
        return {"status": "ok", "model": self.settings.model_name,
                "profile": self.settings.profile,
                "embodiment": self.action_space.embodiment.name,
                "uptime_s": round(time.time() - self.created, 3), "errors": errors,
                "max_batch": self.settings.max_batch, "max_wait_ms": self.settings.max_wait_ms,
                **self.worker.stats()}

    def validate_act(self, max_tokens: int | None, allowed: list[int] | None) -> None:
        needed = self.action_space.num_tokens
        if max_tokens is not None and max_tokens < needed:
            raise ApiError(400, f"max_tokens: an action needs {needed} tokens, got {max_tokens}",
                           param="max_tokens")
        if allowed is not None:
            missing = sorted(self._action_ids.difference(allowed))
            if missing:
                raise ApiError(400, f"allowed_token_ids: {len(missing)} action token ids of this "
                               f"model are missing (e.g. {missing[0]}); take them from "
                               f"GET /v1/rt2/action_space", param="allowed_token_ids",
                               code="wrong_action_ids")

    def answer_budget(self, max_tokens: int | None, allowed: list[int] | None) -> int:
        if allowed is not None:
            raise ApiError(400, "allowed_token_ids: only supported with the action prompt "
                           f"({PROMPTS[self.settings.profile]!r})", param="allowed_token_ids")
        if max_tokens is None:
            return self.settings.default_answer_tokens
        if max_tokens > self.settings.max_answer_tokens:
            raise ApiError(400, f"max_tokens: expected at most {self.settings.max_answer_tokens} "
                           f"for a free-text answer, got {max_tokens}", param="max_tokens")
        return max_tokens


async def _read_body(request: Any, limit: int) -> bytes:
    """Read the request body, refusing more than ``limit`` bytes with 413.

    A body somewhat over the limit is read to its end (and dropped) before
    answering, so the client, which sends before it reads, gets the 413
    instead of a reset connection; far larger bodies are cut off at once.
    """
    drain_limit = 2 * limit
    declared = request.headers.get("content-length")
    too_large = ApiError(413, f"request body exceeds the limit of {limit} bytes",
                         code="body_too_large")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length: expected a number, got {declared!r}")
        if int(declared) > drain_limit:
            raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > drain_limit:
            raise too_large
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise too_large
    return b"".join(chunks)


def create_app(model: ServedModel, settings: ServerSettings) -> Any:
    """Return the FastAPI app serving ``model``; its lifespan starts and stops the model worker."""
    service = _Service(model, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        service.worker.start()
        try:
            yield
        finally:
            service.worker.stop()

    app = FastAPI(title="rt2-ros serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.rt2_service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        service.count_error()
        return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(f"{request.method} {request.url.path}: {exc.detail}", kind,
                                       code=str(exc.status_code)),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    expected_key = settings.api_key.encode() if settings.api_key else None

    async def require_key(request: Request) -> None:
        if expected_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'",
                           type="authentication_error", code="missing_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        # Constant-time comparison: the answer time says nothing about the key.
        if not hmac.compare_digest(token.strip().encode(), expected_key):
            raise ApiError(401, "wrong API key", type="authentication_error",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_key)]

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(service.health())

    @app.get("/v1/models", dependencies=auth)
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{
            "id": settings.model_name, "object": "model", "created": service.created,
            "owned_by": "rt2-ros",
            "rt2": {"profile": settings.profile, "embodiment": service.action_space.embodiment.name,
                    "scheme": service.action_space.scheme,
                    "num_action_tokens": service.action_space.num_tokens}}]})

    @app.get("/v1/rt2/action_space", dependencies=auth)
    async def action_space() -> JSONResponse:
        return JSONResponse({"model": settings.model_name, "profile": settings.profile,
                             **service.action_space.to_json()})

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request) -> JSONResponse:
        started = time.perf_counter()
        raw = await _read_body(request, settings.max_body_bytes)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body: invalid JSON ({exc})", code="invalid_json") from None
        chat = parse_chat_request(body)
        if chat.model != settings.model_name:
            raise ApiError(404, f"model: this server serves {settings.model_name!r}, got "
                           f"{chat.model!r}", code="model_not_found", param="model")
        kind, text = prompt_kind(chat.prompt, settings.profile)
        try:  # an instruction or a question: a sentence, not a document
            text = check_instruction(text)
        except Rt2RosError as exc:
            raise ApiError(400, str(exc), param="messages[0].content") from None
        if kind == ACT:
            service.validate_act(chat.max_tokens, chat.allowed_token_ids)
            budget = 0
        else:
            budget = service.answer_budget(chat.max_tokens, chat.allowed_token_ids)
        decode_started = time.perf_counter()
        image = await run_in_threadpool(decode_image_data_url, chat.image_url,
                                        max_bytes=settings.max_image_bytes,
                                        max_pixels=settings.max_image_pixels)
        decoded = time.perf_counter()
        try:
            future = service.worker.submit(kind, _Work(image, text, chat.prompt, budget))
        except QueueFullError as exc:
            raise ApiError(503, f"server busy: {exc}; retry later", type="server_error",
                           code="server_busy", headers={"Retry-After": "1"}) from None
        except WorkerStoppedError:
            raise ApiError(503, "server is shutting down", type="server_error",
                           code="shutting_down") from None
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future),
                                            timeout=settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the model did not answer within {settings.request_timeout_s} s",
                           type="server_error", code="timeout") from None
        except WorkerStoppedError:
            raise ApiError(503, "server is shutting down", type="server_error",
                           code="shutting_down") from None
        except Exception as exc:  # noqa: BLE001 - any model failure is a 500 with its message
            raise ApiError(500, f"the model failed: {exc}", type="server_error",
                           code="model_error") from None
        value, prompt_tokens, completion_tokens = result.value
        timings = {"read_body": (decode_started - started) * 1000.0,
                   "decode_image": (decoded - decode_started) * 1000.0,
                   "queue": result.queue_ms, "model": result.run_ms}
        if kind == ACT:
            out: PolicyOutput = value
            content = format_action_text(out.tokens, out.plan or None)
            timings.update({k: v for k, v in out.timings.items() if k != "total"})
            rt2: dict[str, Any] = {
                "kind": "action", "tokens": [int(t) for t in out.tokens],
                "token_ids": service.action_space.ids_for_bins(out.tokens),
                "action": {k: _json_number(v) for k, v in out.action.items()},
                "plan": out.plan, "text": out.text}
        else:
            content = value
            rt2 = {"kind": "answer"}
        timings["total"] = (time.perf_counter() - started) * 1000.0
        rt2["batch_size"] = result.batch_size
        rt2["timings_ms"] = {k: round(float(v), 3) for k, v in timings.items()}
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": settings.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "rt2": rt2})

    return app


class RunningServer:
    """A uvicorn server on a background thread (tests, benchmarks, embedding in a program).

    ``port=0`` takes a free ephemeral port; :attr:`url` tells which.  Use as a
    context manager or call :meth:`stop`; the model worker stops with it.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning", start_timeout_s: float = 30.0) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        bound_host, bound_port = self._socket.getsockname()[:2]
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        self.url = f"http://{shown}:{bound_port}"
        self.port = bound_port
        self._server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on",
                                                     access_log=False))
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name=f"uvicorn-{bound_port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._socket.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
