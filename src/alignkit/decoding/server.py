"""An OpenAI-compatible ``/v1/chat/completions`` endpoint around a :class:`Decoder`, so an
aligned model *with* its decoding-time safety filter, guidance and retrieval can be used by
existing clients (the ``openai`` package, LangChain, curl).

Requests are validated by pydantic; a malformed request gets a 4xx with OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``), an unexpected failure a 500 in the same
shape, and the server keeps running either way. Requests run in FastAPI's thread pool and take
turns on the model through a lock (one model, one batch at a time: concurrent requests queue
rather than interleave forwards on shared weights and caches). ``stream: true`` is answered as
server-sent events, sent once the response is complete: the filter and best-of-N need the
whole response before anything can be shown. A response ended by the CBF fallback has
``finish_reason: "content_filter"``, as OpenAI reports its own moderation. Diagnostics of the
filters come back under the extra ``alignkit`` key of each choice.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from alignkit.decoding.pipeline import Decoder, Sample

MAX_CONTENT_CHARS = 100_000


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat request that apply here; other known fields (user,
    logprobs=false ...) are accepted and ignored, as many clients always send them."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    seed: int | None = None
    stream: bool = False
    stop: str | list[str] | None = None


class APIError(HTTPException):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(status, message)
        self.param = param
        self.code = code


def _error(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
    )


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def create_app(
    decoder: Decoder, model_name: str = "alignkit", max_tokens: int = 1024, max_n: int = 16
) -> FastAPI:
    """The FastAPI app serving ``decoder`` as ``model_name``."""
    app = FastAPI(title="alignkit", version="1")
    lock = threading.Lock()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg, loc = "the request body is not valid JSON", None
        return _error(400, f"{loc + ': ' if loc else ''}{msg}", "invalid_request_error", loc)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _error(
            exc.status_code,
            str(exc.detail),
            kind,
            getattr(exc, "param", None),
            getattr(exc, "code", None),
        )

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "alignkit"}],
        }

    @app.post("/v1/chat/completions", response_model=None)
    def chat(req: ChatRequest) -> Any:
        if req.model not in (None, model_name):
            raise APIError(
                404,
                f"model {req.model!r} is not served here (this server serves {model_name!r})",
                "model",
                "model_not_found",
            )
        if req.n > max_n:
            raise APIError(400, f"n must be at most {max_n}", "n")
        limit = req.max_completion_tokens or req.max_tokens
        if limit is not None and limit > max_tokens:
            raise APIError(400, f"max_tokens must be at most {max_tokens}", "max_tokens")
        if req.messages[-1].role == "assistant":
            raise APIError(400, "the last message must be from the user or the system", "messages")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        if sum(len(m["content"]) for m in messages) > MAX_CONTENT_CHARS:
            raise APIError(400, f"messages exceed {MAX_CONTENT_CHARS} characters", "messages")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if req.temperature == 0.0 and req.n > 1:
            raise APIError(400, "n > 1 needs temperature > 0 (greedy gives one answer)", "n")
        update: dict[str, Any] = {}
        if req.temperature is not None:
            update["temperature"] = req.temperature
        if req.top_p is not None:
            update["top_p"] = req.top_p
        if limit is not None:
            update["max_new_tokens"] = limit
        sampling = decoder.sampling.model_copy(update=update)
        if decoder.best_of > 1 and sampling.temperature == 0.0:
            raise APIError(
                400, "this server uses best-of-N, which needs temperature > 0", "temperature"
            )
        # Without a seed each request samples afresh (OpenAI semantics); with one it is
        # reproducible.
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        with lock:
            results = decoder.generate([messages], num_samples=req.n, sampling=sampling, seed=seed)
        result = results[0]
        created = int(time.time())
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        choices = [_choice(i, s, stop) for i, s in enumerate(result.samples)]
        passages = [r.to_dict() for r in result.passages] if result.passages is not None else None
        usage = {
            "prompt_tokens": result.samples[0].prompt_tokens,
            "completion_tokens": sum(s.completion_tokens for s in result.samples),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        body: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "choices": choices,
            "usage": usage,
        }
        if passages is not None:
            body["alignkit"] = {"passages": passages}
        if req.stream:
            return StreamingResponse(_sse(body), media_type="text/event-stream")
        return body

    return app


def _choice(index: int, sample: Sample, stop: list[str]) -> dict[str, Any]:
    text, stopped = _cut_at_stop(sample.text, stop)
    if sample.cbf and sample.cbf.get("fallback"):
        reason = "content_filter"
    elif sample.finished or stopped:
        reason = "stop"
    else:
        reason = "length"
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "finish_reason": reason,
        "alignkit": sample.diagnostics(),
    }


def _sse(body: dict[str, Any]) -> Iterator[str]:
    """The finished completion as OpenAI stream chunks: role, content, finish, [DONE]."""
    base = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    for c in body["choices"]:
        i = c["index"]
        for delta, reason in (
            ({"role": "assistant"}, None),
            ({"content": c["message"]["content"]}, None),
            ({}, c["finish_reason"]),
        ):
            chunk = base | {"choices": [{"index": i, "delta": delta, "finish_reason": reason}]}
            yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def serve(
    decoder: Decoder, host: str = "127.0.0.1", port: int = 8000, model_name: str = "alignkit"
) -> None:
    """Run the app with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(create_app(decoder, model_name), host=host, port=port, log_level="info")
