"""`textrnn serve-model`: an HTTP server for an exported bundle (Starlette on uvicorn; no torch).

    POST /v1/predict  {"texts": ["...", ...], "explain": false} (or a bare JSON array) → one prediction per
                      text, in order; with "explain": true (or K), the top K tokens per class of each
    GET  /healthz     liveness, the model in service, the last failed reload
    GET  /v1/model    labels, test metrics, vocabulary hash, export and load times

Requests arriving together are predicted together: one worker takes a request from the queue, waits a
short window for others that are already arriving, and predicts all their texts in one `Predictor` call
on a thread of its own, so the event loop goes on reading requests meanwhile. Bad input is answered with
a 4xx and a JSON reason; a text that cannot be predicted gets a row with a reason, as `textrnn predict`
gives. SIGHUP (or, with --watch, a changed bundle) loads the bundle again and swaps it in whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from textrnn.lenient import clean_str
from textrnn.predict import Prediction
from textrnn.serving_model import BundleError, LoadedModel, ModelHolder
from textrnn.serving_settings import ServerSettings

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request the server refuses: HTTP status, a stable code for programs, a message for people."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Job:
    texts: list[str | None]
    future: asyncio.Future
    explain: int = 0  # top units per class to attach to each row (0: none)


def predict_jobs(model: LoadedModel, jobs: list[_Job], batch_size: int) -> list[tuple[list, list | None]]:
    """Each job's predictions, and its explanations where it asked for them, all by `model`: the texts of
    every job in one `predict` call, those of the jobs asking for explanations in one `explain` call."""
    predictions = model.predictor.predict([text for job in jobs for text in job.texts], batch_size)
    asking = [job for job in jobs if job.explain]
    explained = iter(model.predictor.explain([text for job in asking for text in job.texts]) if asking else [])
    results, start = [], 0
    for job in jobs:
        rows = predictions[start:start + len(job.texts)]
        start += len(job.texts)
        results.append((rows, [next(explained).top(job.explain) for _ in job.texts] if job.explain else None))
    return results


class MicroBatcher:
    """One queue, one worker: the texts of the requests waiting together go to the model in one call."""

    def __init__(self, holder: ModelHolder, window_s: float, max_rows: int, batch_size: int):
        self.holder, self.window_s, self.max_rows, self.batch_size = holder, window_s, max_rows, batch_size
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.arriving = 0  # requests being read that will join the queue: worth waiting the window for
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textrnn-predict")

    async def predict(self, texts: list[str | None], explain: int = 0) -> tuple[list[Prediction], list | None, dict]:
        """The predictions of `texts`, their explanations (top `explain` units per class; None if 0) and
        the tag of the model that made them (all by one model)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(texts, future, explain))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            model: LoadedModel = self.holder.current  # read once: the whole batch sees one model
            try:
                results = await loop.run_in_executor(self._executor, predict_jobs, model, jobs, self.batch_size)
            except Exception as err:  # the request fails with a 500; the server goes on
                log.exception("serving: prediction of a batch of %d requests failed", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            for job, (predictions, explanations) in zip(jobs, results):
                if not job.future.done():  # its client may have gone
                    job.future.set_result((predictions, explanations, model.tag))

    async def _collect(self) -> list[_Job]:
        """The next batch: the first job, and those that join within the window. Alone (nothing queued,
        nothing arriving), a request goes at once: a lone client never waits for the window."""
        jobs = [await self.queue.get()]
        if self.window_s and (self.arriving or not self.queue.empty()):
            await asyncio.sleep(self.window_s)
        rows = len(jobs[0].texts)
        while rows < self.max_rows and not self.queue.empty():
            jobs.append(self.queue.get_nowait())
            rows += len(jobs[-1].texts)
        return jobs

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused as soon as it passes `max_bytes` (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, "too_many_bytes", f"the body has {declared} bytes; at most {max_bytes} are accepted "
                                                  "(send fewer texts per request)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, "too_many_bytes", f"the body passes {max_bytes} bytes, the most accepted "
                                                      "(send fewer texts per request)")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_texts(body: bytes, max_texts: int) -> tuple[list[str | None], list[str], int]:
    """The texts of a request body, per text why it cannot be predicted ('' if it can), and how many
    units per class to explain each with (0: no explanation).

    Bytes that are not UTF-8 inside a text make that text a `bad_utf8` row (decoded with surrogateescape,
    as `textrnn predict` reads arguments), as does a JSON escape of a lone surrogate ("\\ud800")."""
    try:
        payload = json.loads(body.decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as err:
        raise RequestError(400, "invalid_json", f"the body is not JSON: {err.msg} at line {err.lineno} "
                                                f"column {err.colno}") from None
    except RecursionError:
        raise RequestError(400, "invalid_json", "the body is not JSON this server reads: it nests too deeply") from None
    texts, explain = _texts_field(payload), _explain_field(payload)
    if len(texts) > max_texts:
        raise RequestError(413, "too_many_texts", f"{len(texts)} texts in one request; at most {max_texts} "
                                                  "are accepted (split the request)")
    if explain and len(texts) > EXPLAIN_MAX_TEXTS:  # each costs up to 65 model rows; the batch waits for it
        raise RequestError(413, "too_many_texts", f"{len(texts)} texts to explain in one request; at most "
                                                  f"{EXPLAIN_MAX_TEXTS} are explained at a time (split the request)")
    for i, text in enumerate(texts):
        if text is not None and not isinstance(text, str):
            raise RequestError(422, "wrong_type", f"texts[{i}] is {_json_type(text)}; each text must be a "
                                                  "string (or null)")
    checked = [clean_str(text) for text in texts]
    return [text for text, _ in checked], [error or "" for _, error in checked], explain


EXPLAIN_DEFAULT_K, EXPLAIN_MAX_K, EXPLAIN_MAX_TEXTS = 5, 50, 32


def _explain_field(payload) -> int:
    value = payload.get("explain", False) if isinstance(payload, dict) else False
    if value is True:
        return EXPLAIN_DEFAULT_K
    if value is False or value is None:
        return 0
    if isinstance(value, int) and 1 <= value <= EXPLAIN_MAX_K:
        return value
    raise RequestError(422, "wrong_type", f"explain is {_json_type(value)} {value!r}; it must be true, false or a "
                                          f"number of units per class from 1 to {EXPLAIN_MAX_K}")


def _texts_field(payload) -> list:
    if isinstance(payload, dict):
        unknown = sorted(set(payload) - {"texts", "explain"})
        if unknown:
            raise RequestError(422, "unknown_field", f"unknown field(s) {unknown}; the body is "
                                                     '{"texts": [...], "explain": false} or a JSON array of texts')
        if "texts" not in payload:
            raise RequestError(422, "missing_field", 'the body has no "texts" field: send {"texts": ["..."]}')
        payload = payload["texts"]
    if not isinstance(payload, list):
        raise RequestError(422, "wrong_type", f"texts must be a JSON array of strings, not {_json_type(payload)}")
    return payload


def _json_type(value) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def prediction_json(prediction: Prediction, explanation: dict | None = None) -> dict:
    """A row of the answer; with `explanation` (top units per class), an "explanation" beside."""
    if prediction.reason:
        row = {"label": None, "probabilities": None, "reason": prediction.reason}
    else:
        row = {"label": prediction.label, "probabilities": prediction.probabilities, "reason": None}
    if explanation is not None:
        row["explanation"] = explanation if not prediction.reason else None
    return row


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(settings: ServerSettings, holder: ModelHolder) -> Starlette:
    """The ASGI app. Plain Starlette routes: FastAPI's request handling (dependency solving, response
    checks) cost more per request than the rest of the server's work on a one-text request."""
    batcher = MicroBatcher(holder, settings.batch_window_ms / 1000, settings.max_batch_rows, settings.batch_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        background = {asyncio.create_task(batcher.run(), name="textrnn-batcher")}
        if settings.watch_s:
            background.add(asyncio.create_task(_watch(holder, settings.watch_s), name="textrnn-watch"))
        reloads: set[asyncio.Task] = set()

        def on_sighup() -> None:
            log.info("serving: SIGHUP: loading %s again", holder.bundle)
            task = asyncio.create_task(holder.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, NotImplementedError, RuntimeError):  # not the main thread / Windows
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        yield
        with contextlib.suppress(ValueError, NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
        for task in background | reloads:
            task.cancel()
        await asyncio.gather(*background, *reloads, return_exceptions=True)
        batcher.close()
        log.info("serving: shut down (requests in flight were answered)")

    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return _error(err.status, err.code, err.message)

    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return _error(err.status_code, code, f"{request.method} {request.url.path}: {err.detail}")

    async def predict(request: Request) -> JSONResponse:
        batcher.arriving += 1
        try:
            texts, reasons, explain = parse_texts(await read_body(request, settings.max_bytes), settings.max_texts)
        finally:
            batcher.arriving -= 1
        if texts:
            predictions, explanations, tag = await batcher.predict(texts, explain)
        else:
            predictions, explanations, tag = [], None, holder.current.tag
        # A text that could not even be read keeps that reason (bad_utf8) rather than "empty".
        predictions = [Prediction("", {}, r) if r else p for p, r in zip(predictions, reasons)]
        rows = [prediction_json(p, e) for p, e in zip(predictions, explanations or [None] * len(predictions))]
        return JSONResponse({"model": tag, "predictions": rows})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **holder.current.tag, "loaded_at": holder.current.info["loaded_at"],
                             "swaps": holder.swaps, "last_reload_error": holder.last_error})

    async def model_info(request: Request) -> JSONResponse:
        return JSONResponse(holder.current.info)

    routes = [Route("/v1/predict", predict, methods=["POST"]), Route("/healthz", healthz, methods=["GET"]),
              Route("/v1/model", model_info, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={RequestError: refused, HTTPException: http_error})


async def _watch(holder: ModelHolder, every_s: float) -> None:
    """Swap in a new export of the bundle when its files change (checked every `every_s` seconds)."""
    while True:
        await asyncio.sleep(every_s)
        await holder.reload(only_if_changed=True)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one), bound before uvicorn starts so its port can be logged."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # Naming IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it each response (headers and body written apart) waits out the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def serve(settings: ServerSettings) -> int:
    """Run the server until SIGTERM or SIGINT: it stops listening, answers the requests in flight, and
    the process then ends by that signal (uvicorn raises it again once it is done). 2 if the bundle
    cannot be served."""
    import uvicorn

    try:
        holder = ModelHolder(settings.model, settings.threads)
    except (OSError, BundleError) as err:
        log.error("serve-model: %s", err)
        return 2
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    log.info("serving: listening on http://%s:%d (model %s, labels %s)", host if ":" not in host else f"[{host}]",
             port, holder.current.tag["model_sha256"][:12], holder.current.predictor.labels)
    config = uvicorn.Config(create_app(settings, holder), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=30)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
