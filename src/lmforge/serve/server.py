"""`lmforge serve`: the OpenAI-compatible HTTP API (FastAPI + uvicorn) over the engine.

Endpoints as vLLM serves them: /v1/models, /v1/completions (prompts as text or token ids,
`echo` with prompt log-probabilities in the legacy format lm-evaluation-harness reads),
/v1/chat/completions (the model's chat template; tool calls, lmforge.serve.tools), structured
outputs on both (response_format and vLLM's fields, lmforge.serve.structured), streaming as server-sent events ending
in `data: [DONE]`, /tokenize, /detokenize, /tokenizer_info, /health and Prometheus
/metrics. Errors are OpenAI's error JSON: 400 bad request, 401 wrong or missing key,
404 unknown model or route, 503 when the waiting queue is full.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import GenerationError
from lmforge.eval.tasks import extract_answer
from lmforge.eval.think import majority
from lmforge.interop.chat import render_chat
from lmforge.serve.async_engine import AsyncEngine
from lmforge.serve.engine import Delta, EngineFullError, LLMEngine, TokenLogprob
from lmforge.serve.llm import CompletionOutput, collect, encode_prompt
from lmforge.serve.metrics import RequestTimer, ServerMetrics
from lmforge.serve.params import SamplingParams
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from lmforge.serve.tools import ToolCallParser, hermes_messages, split_reply, template_reads_tools

OPEN_PATHS = ("/health", "/metrics")
DISCONNECT_POLL_SECONDS = 0.5


class APIError(Exception):
    """An error answered with OpenAI's error JSON and an HTTP status."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_response(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)


def sse(payload: dict | str) -> str:
    """One server-sent event."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def effort_fields(signals: dict | None, kept: bool | None, score: float | None, params: SamplingParams) -> dict:
    """A finished choice's lmforge extension fields: its reasoning signals (when `return_dtr`) and its Think@n
    verdict (under a rule); nothing otherwise."""
    fields = {}
    if params.return_dtr and signals is not None:
        fields["dtr"], fields["reasoning_signals"] = signals["dtr"], signals
    if params.judged and kept is not None:
        fields["think"] = {"kept": kept, "score": score}
    return fields


def think_votes(runs: list["PromptRun"], params: SamplingParams) -> dict:
    """Under a Think@n rule: per prompt, the majority of the kept choices' "Answer: <integer>" lines."""
    if params.think is None:
        return {}
    answers = [majority([extract_answer(out.text) for out in run.outputs if out.kept is not False]) for run in runs]
    return {"think": {"rule": params.think, "answers": answers}}


def tool_finish(reason: str | None, called: bool) -> str | None:
    """OpenAI's finish reason: "tool_calls" for a reply that ended by itself after calling tools."""
    return "tool_calls" if reason == "stop" and called else reason


@dataclass
class PromptRun:
    """One prompt's samples as they arrive, plus what the engine reports for the prompt."""

    prompt: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[TokenLogprob] | None = None
    cached_tokens: int = 0
    timer: RequestTimer | None = None

    def add(self, delta: Delta) -> None:
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs = delta.prompt_logprobs
        self.cached_tokens = max(self.cached_tokens, delta.num_cached_tokens)
        collect(delta, self.outputs[delta.index])
        if self.timer:
            self.timer.tokens(len(delta.token_ids))


class OpenAIServer:
    """The API's handlers around one engine serving one model name."""

    def __init__(self, engine: LLMEngine, model_name: str, api_key: str | None = None):
        self.engine, self.model_name, self.api_key = engine, model_name, api_key
        self.tokenizer = engine.tokenizer
        self.metrics = ServerMetrics()
        self.async_engine = AsyncEngine(engine, lambda e, deltas, seconds: self.metrics.observe_engine(e))

    # checks shared by the handlers

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.model_name!r}",
                           "not_found_error", "model")

    def check_room(self, requests: int) -> None:
        if self.async_engine.queued() + requests > self.engine.config.max_waiting:
            raise APIError(503, "the server's waiting queue is full; retry later", "server_error")

    def prompt_ids(self, prompt: str | list[int]) -> list[int]:
        return encode_prompt(self.tokenizer, prompt) if isinstance(prompt, str) else list(prompt)

    def chat_prompt(self, body: ChatCompletionRequest | TokenizeRequest) -> list[int]:
        """The conversation in the model's chat format, with the offered tools (lmforge.serve.tools)."""
        template = self.tokenizer.chat_template
        if not template:
            raise APIError(400, "this model has no chat template; use /v1/completions with a text prompt")
        messages = [m.as_dict() for m in body.messages]
        tools = body.tool_dicts() if isinstance(body, ChatCompletionRequest) else []
        if tools and not template_reads_tools(template):
            messages, tools = hermes_messages(messages, tools), []
        return self.prompt_ids(render_chat(self.tokenizer, messages, body.add_generation_prompt, tools or None))

    def admit(self, body, prompts: list[list[int]]) -> SamplingParams:
        """Check a generation request before anything is queued; its sampling settings."""
        self.check_model(body.model)
        params = body.params()
        for ids in prompts:
            self.engine.check_prompt(ids, params)
        self.check_room(len(prompts))
        self.metrics.prompt_tokens.inc(sum(map(len, prompts)))
        return params

    # log-probabilities in the two formats

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode_bytes([token]).decode("utf-8", errors="replace")

    def legacy_logprobs(self, entries: list[TokenLogprob]) -> dict:
        """Completions' format: tokens, token_logprobs (None for a prompt's first token), top_logprobs, text_offset."""
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        offset = 0
        for token, lp, top in entries:
            text = self.token_text(token)
            out["tokens"].append(text)
            out["token_logprobs"].append(lp)
            out["top_logprobs"].append(None if lp is None else {self.token_text(t): v for t, v in top})
            out["text_offset"].append(offset)
            offset += len(text)
        return out

    def chat_logprobs(self, entries: list[TokenLogprob]) -> dict:
        """Chat's format: content entries with token, logprob, bytes and top_logprobs."""

        def item(token: int, lp: float) -> dict:
            return {"token": self.token_text(token), "logprob": lp, "bytes": list(self.tokenizer.decode_bytes([token]))}

        return {"content": [{**item(t, lp), "top_logprobs": [item(a, v) for a, v in top]} for t, lp, top in entries]}

    # running requests

    def new_run(self, prompt: list[int], params: SamplingParams) -> PromptRun:
        return PromptRun(prompt, [CompletionOutput(i) for i in range(params.n)], timer=RequestTimer(self.metrics))

    async def run_to_end(self, request_id: str, run: PromptRun, params: SamplingParams, raw: Request) -> PromptRun:
        """Generate one prompt's samples to the end; abort (free its memory) if the client disconnects first."""

        async def consume() -> None:
            async for delta in self.async_engine.generate(request_id, run.prompt, params):
                run.add(delta)

        task = asyncio.create_task(consume())
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if not done and await raw.is_disconnected():
                task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
        return run

    async def merged(self, cid: str, runs: list[PromptRun], params: SamplingParams) -> AsyncIterator[tuple[int, Delta]]:
        """Deltas of several prompts' requests as they come, with the prompt's index."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int) -> None:
            try:
                async for delta in self.async_engine.generate(f"{cid}-{i}", runs[i].prompt, params):
                    await queue.put((i, delta))
            except Exception as e:  # noqa: BLE001 - handed to the stream
                await queue.put((i, e))

        tasks = [asyncio.create_task(pump(i)) for i in range(len(runs))]
        left = len(runs) * params.n
        try:
            while left:
                i, item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                left -= item.finish_reason is not None
                runs[i].add(item)
                yield i, item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # completions

    async def completions(self, body: CompletionRequest, raw: Request):
        prompts = [self.prompt_ids(p) for p in body.prompts()]
        params = self.admit(body, prompts)
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        runs = [self.new_run(p, params) for p in prompts]
        if body.stream:
            return StreamingResponse(self.stream_completions(cid, created, runs, params, body), media_type="text/event-stream")
        await asyncio.gather(*(self.run_to_end(f"{cid}-{i}", run, params, raw) for i, run in enumerate(runs)))
        choices = [self.completion_choice(i, run, out, params, body) for i, run in enumerate(runs) for out in run.outputs]
        return {"id": cid, "object": "text_completion", "created": created, "model": self.model_name, "choices": choices,
                "usage": self.usage(runs), **think_votes(runs, params)}

    def completion_choice(self, i: int, run: PromptRun, out: CompletionOutput, params: SamplingParams,
                          body: CompletionRequest) -> dict:
        prompt_text = self.tokenizer.decode(run.prompt) if body.echo else ""
        logprobs = None
        if body.logprobs is not None:
            logprobs = self.legacy_logprobs(((run.prompt_logprobs or []) if body.echo else []) + (out.logprobs or []))
        return {"index": i * params.n + out.index, "text": prompt_text + out.text, "logprobs": logprobs,
                "finish_reason": out.finish_reason, **effort_fields(out.signals, out.kept, out.score, params)}

    def usage(self, runs: list[PromptRun]) -> dict:
        return usage(sum(len(r.prompt) for r in runs), sum(len(o.token_ids) for r in runs for o in r.outputs),
                     sum(r.cached_tokens for r in runs))

    async def stream_completions(self, cid, created, runs, params, body: CompletionRequest) -> AsyncIterator[str]:
        def chunk(choices: list[dict], **extra) -> str:
            return sse({"id": cid, "object": "text_completion", "created": created, "model": self.model_name,
                        "choices": choices, **extra})

        echoed: set[tuple[int, int]] = set()
        try:
            async for i, delta in self.merged(cid, runs, params):
                text, entries = delta.text, delta.logprobs or []
                if body.echo and (i, delta.index) not in echoed:
                    echoed.add((i, delta.index))
                    text = self.tokenizer.decode(runs[i].prompt) + text
                    entries = (runs[i].prompt_logprobs or []) + entries
                logprobs = self.legacy_logprobs(entries) if body.logprobs is not None else None
                yield chunk([{"index": i * params.n + delta.index, "text": text, "logprobs": logprobs,
                              "finish_reason": delta.finish_reason,
                              **effort_fields(delta.signals, delta.kept, delta.score, params)}])
            if body.stream_options and body.stream_options.include_usage:
                yield chunk([], usage=self.usage(runs))
        except (GenerationError, RuntimeError) as e:
            yield sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": 500}})
        yield sse("[DONE]")

    # chat completions

    async def chat(self, body: ChatCompletionRequest, raw: Request):
        prompt = self.chat_prompt(body)
        params = self.admit(body, [prompt])
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        run = self.new_run(prompt, params)
        if body.stream:
            return StreamingResponse(self.stream_chat(cid, created, run, params, body), media_type="text/event-stream")
        await self.run_to_end(f"{cid}-0", run, params, raw)
        choices = []
        for out in run.outputs:
            message, calls = {"role": "assistant", "content": out.text}, []
            if body.tool_dicts():
                message["content"], calls = split_reply(out.text)
                message.update({"tool_calls": calls} if calls else {})
            choices.append({"index": out.index, "message": message,
                            "logprobs": self.chat_logprobs(out.logprobs or []) if body.logprobs else None,
                            "finish_reason": tool_finish(out.finish_reason, bool(calls)),
                            **effort_fields(out.signals, out.kept, out.score, params)})
        return {"id": cid, "object": "chat.completion", "created": created, "model": self.model_name, "choices": choices,
                "usage": self.usage([run]), **think_votes([run], params)}

    async def stream_chat(self, cid, created, run: PromptRun, params, body: ChatCompletionRequest) -> AsyncIterator[str]:
        def chunk(choices: list[dict], **extra) -> str:
            return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
                        "choices": choices, **extra})

        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                     for i in range(params.n)])
        parsers = {i: ToolCallParser() for i in range(params.n)} if body.tool_dicts() else {}
        calls_made = [0] * params.n
        try:
            async for _, delta in self.merged(cid, [run], params):
                logprobs = self.chat_logprobs(delta.logprobs or []) if body.logprobs else None
                text, calls = delta.text, []
                if parsers:
                    text, calls = parsers[delta.index].push(text)
                    if delta.finish_reason is not None:
                        rest, more = parsers[delta.index].finish()
                        text, calls = text + rest, calls + more
                content = {"content": text} if text else {}
                if calls:
                    first = calls_made[delta.index]
                    content["tool_calls"] = [{"index": first + k, **call} for k, call in enumerate(calls)]
                    calls_made[delta.index] += len(calls)
                yield chunk([{"index": delta.index, "delta": content, "logprobs": logprobs,
                              "finish_reason": tool_finish(delta.finish_reason, calls_made[delta.index] > 0),
                              **effort_fields(delta.signals, delta.kept, delta.score, params)}])
            if body.stream_options and body.stream_options.include_usage:
                yield chunk([], usage=self.usage([run]))
        except (GenerationError, RuntimeError) as e:
            yield sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": 500}})
        yield sse("[DONE]")

    # the rest of the API

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": int(time.time()),
                                            "owned_by": "lmforge", "max_model_len": self.engine.max_seq_len}]}

    def tokenize(self, body: TokenizeRequest) -> dict:
        self.check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise APIError(400, "give either prompt or messages")
        if body.messages is not None:
            tokens = self.chat_prompt(body)
        else:
            tokens = self.prompt_ids(body.prompt) if body.add_special_tokens else self.tokenizer.encode(body.prompt)
        return {"count": len(tokens), "max_model_len": self.engine.max_seq_len, "tokens": tokens}

    def detokenize(self, body: DetokenizeRequest) -> dict:
        self.check_model(body.model)
        vocab = self.engine.model.cfg.vocab_size
        bad = next((t for t in body.tokens if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} is outside the vocabulary (0..{vocab - 1})", param="tokens")
        return {"prompt": self.tokenizer.decode(body.tokens)}

    def tokenizer_info(self) -> dict:
        tok = self.tokenizer

        def text(i):
            return None if i is None else tok.hf.id_to_token(i)

        return {"tokenizer_class": "PreTrainedTokenizerFast", "vocab_size": tok.vocab_size, "eos_token": text(tok.eos_id),
                "bos_token": text(tok.bos_id), "pad_token": text(tok.pad_id), "add_bos_token": tok.add_bos,
                "chat_template": tok.chat_template, "model_max_length": self.engine.max_seq_len}


def build_app(server: OpenAIServer, engine_thread: bool = True) -> FastAPI:
    """The FastAPI application of `server`. With `engine_thread` the engine runs on a thread of its own
    while the app is up; otherwise the caller runs `server.async_engine.run()` (see `run_server`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if engine_thread:
            server.async_engine.start()
        yield
        if engine_thread:
            server.async_engine.shutdown()

    app = FastAPI(title="lmforge", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable):
        if server.api_key and request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {server.api_key}".encode()):
                server.metrics.requests.labels(request.url.path, "401").inc()
                return error_response(401, "missing or wrong API key (send Authorization: Bearer KEY)", "authentication_error")
        response = await call_next(request)
        server.metrics.requests.labels(request.url.path, str(response.status_code)).inc()
        return response

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return error_response(e.status, e.message, e.kind, e.param)

    @app.exception_handler(EngineFullError)
    async def full(request: Request, e: EngineFullError):
        return error_response(503, str(e), "server_error")

    @app.exception_handler(GenerationError)
    async def bad_generation(request: Request, e: GenerationError):
        return error_response(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return error_response(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(e.status_code, str(e.detail), kind)

    @app.get("/health")
    async def health():
        return Response(status_code=200 if server.async_engine.alive else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return server.models()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, raw: Request):
        return await server.completions(body, raw)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, raw: Request):
        return await server.chat(body, raw)

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        return server.tokenize(body)

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        return server.detokenize(body)

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        return server.tokenizer_info()

    return app


def run_server(server: OpenAIServer, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until Ctrl-C or SIGTERM: HTTP (uvicorn) on a second thread, the engine loop on this one."""
    import signal
    import threading

    import uvicorn

    http = uvicorn.Server(uvicorn.Config(build_app(server, engine_thread=False), host=host, port=port, log_level=log_level))
    thread = threading.Thread(target=http.run, name="lmforge-http", daemon=True)

    def stop(signum, frame):
        server.async_engine.shutdown()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread.start()
    try:
        server.async_engine.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        http.should_exit = True
        thread.join(timeout=30)
