"""`mnistlab serve`: a local page to draw a digit on, and a small JSON API (FastAPI + uvicorn).

POST /api/predict takes an image (multipart field "file", or the raw bytes with an image
content type) or JSON {"pixels": 28x28 array, ink high, 0-255} and answers the whole
distribution; with ?explain=1 also the runner-up, the logits and a saliency map. GET
/healthz says the server is up. Bodies over the limit get 413, bad ones 400 or 422 with a
message, slow ones 408; no request can produce a traceback.

Decoding and the model run in worker threads, a few at a time, so that a large upload
never stalls the event loop: /healthz and the other requests keep their pace.

With a --collect folder (collect.py), POST /api/correct?label=L saves a drawing the model got wrong,
POST /api/finetune starts a fine-tune on those drawings in a child process and GET /api/finetune
says how it goes; its model then replaces the served one, for every request that starts after.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from pathlib import Path

from ..data.preprocess import NoDigitError
from ..errors import MnistlabError
from ..inference import ModelOutputError
from ..launch import exit_with_parent
from . import collect as collecting
from . import page

try:
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # the serve extra is not installed
    FastAPI = None  # type: ignore[assignment,misc]
    H11Protocol = object  # type: ignore[assignment,misc]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 it is
    HttpToolsProtocol = object  # type: ignore[assignment,misc]

log = logging.getLogger("mnistlab.serve.server")
REQUEST_TIMEOUT = 10.0  # seconds a client has to send a request's headers, and then its body
BACKLOG = 1024
BODY, UPLOAD, PIXELS = "request body", "uploaded file", "pixels"  # a request's image's names: its answer's "source"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _said(e: MnistlabError) -> str:
    """The API's sentence for an error. Preprocessing starts its sentences with the image's name, and a
    request's image has none but the one given here ("request body: no digit found …"), which means nothing
    to whoever sent the image, or drew it on the page: it is left out."""
    label, sep, rest = str(e).partition(": ")
    return rest if sep and label in (BODY, UPLOAD, PIXELS) else str(e)


class Guard:
    """ASGI middleware around the app: bodies over max_bytes get 413 (by Content-Length or while
    streaming), and whatever escapes the app is logged here once, in one place."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(scope, receive, send)
        seen, over = 0, False

        async def limited_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # stop reading; the app sees an empty, final body
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message):
            if over:  # whatever the app answers to a cut body, the client gets 413
                if message["type"] == "http.response.start":
                    await self._too_large(scope, receive, send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:  # a bug of ours: the client got a 500 already; one traceback in the log
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))

    def _too_large(self, scope, receive, send):
        # built only when needed: a response object per request would sit on the hot path
        return _error(413, f"request body over the limit of {self.max_bytes:,} bytes")(scope, receive, send)


class Served:
    """The model that requests use, and the checkpoint it came from. A fine-tune replaces both by one
    assignment: a request reads `model` once, so each is answered by one model, old or new."""

    def __init__(self, model, checkpoint: str | None):
        self.model, self.checkpoint = model, checkpoint

    def swap(self, checkpoint: str) -> None:
        model = _load(checkpoint)
        self.model, self.checkpoint = model, checkpoint
        print(f"now serving {checkpoint}", flush=True)


def create_app(model, max_bytes: int = 2_000_000, threads: int = 2, collect: str | os.PathLike | None = None,
               checkpoint: str | None = None):
    """The ASGI app around one loaded model (an inference.Classifier, loaded once, shared by every
    request); decoding and prediction run in at most `threads` worker threads at a time. With
    `collect`, a folder for corrections, which a fine-tune of `checkpoint` (the served model's file or
    pretrained name) learns from."""
    if FastAPI is None:
        raise MnistlabError("mnistlab serve needs FastAPI and uvicorn: pip install 'mnistlab[serve]'.")
    served = Served(model, checkpoint)
    folder = collecting.writable_folder(collect) if collect is not None else None
    tuner = collecting.FineTune(folder, served.swap) if folder is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if tuner is not None and served.checkpoint is not None:
            tuner.prepare(served.checkpoint)
        yield
        if tuner is not None:
            tuner.stop()

    app = FastAPI(title="mnistlab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    html = page.page([page.script(name) for name in page.SERVER_SCRIPTS])
    scripts = {name: page.asset(name) for name in ("app.js", *page.SERVER_SCRIPTS)}
    limiter = anyio.CapacityLimiter(threads)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return html

    @app.get("/{name}.js")
    async def javascript(name: str):
        if f"{name}.js" not in scripts:
            return _error(404, "no such file")
        return Response(scripts[f"{name}.js"], media_type="text/javascript")

    @app.get("/healthz")
    async def healthz():
        model = served.model
        return {"status": "ok", "model": model.name, "classes": list(model.classes),
                "temperature": model.card.temperature, "collect": folder is not None}

    @app.post("/api/predict")
    async def predict(request: Request):
        model = served.model  # once: a swap during this request does not mix two models

        async def read():
            work = await _read(request, _content_type(request), model)
            return work or _error(415, "send an image (multipart field 'file', or raw bytes with an image "
                                       "content type) or JSON {\"pixels\": 28x28 array}")

        # a plain JSONResponse: FastAPI's generic encoder costs more than the model on a 28x28 list
        return await _answered(read, limiter, lambda pred: JSONResponse(
            {**pred.to_dict(len(model.classes)), "preprocessed": pred.preprocessed.tolist()}))

    if folder is not None and tuner is not None:
        _collect_routes(app, served, folder, tuner, limiter)

    @app.exception_handler(HTTPException)  # unknown paths (404), wrong methods (405): the API's one error format
    async def http_error(request, exc):
        return _error(exc.status_code, str(exc.detail).lower().rstrip(".") if exc.detail else "error")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return _error(422, "the request does not fit the API")

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug of ours: the client sees no traceback; Guard logs it
        return _error(500, "internal error")

    return Guard(app, max_bytes)


def _collect_routes(app, served: Served, folder: Path, tuner: collecting.FineTune, limiter) -> None:
    @app.post("/api/correct")
    async def correct(request: Request):
        model = served.model
        label = request.query_params.get("label")
        if label is None:
            return _error(400, "say which class the drawing is: /api/correct?label=NAME")
        if not _is_image(_content_type(request)):
            return _error(415, "send the drawing as an image (raw bytes with an image content type)")

        async def read():
            body = await request.body()

            def save():
                if label not in model.classes:  # before any decoding: nothing is written for a bad label
                    raise MnistlabError(f"label '{label[:40]}' is not one of the model's classes "
                                        f"({', '.join(model.classes)}).")
                seen = model.predict(body, name=BODY).preprocessed
                return collecting.save_correction(folder, label, tuple(model.classes), body, seen)
            return save

        return await _answered(read, limiter, lambda path: JSONResponse(
            {"saved": str(path), "counts": collecting.counts(folder)}))

    @app.post("/api/finetune")
    async def finetune():
        if served.checkpoint is None:
            return _error(409, "this server was not told which checkpoint it serves; it cannot fine-tune it")
        try:
            status = await anyio.to_thread.run_sync(tuner.start, served.checkpoint)
        except collecting.FineTuneBusy as e:
            return _error(409, str(e))
        except MnistlabError as e:
            return _error(400, str(e))
        return JSONResponse(_shown(status), status_code=202)

    @app.get("/api/finetune")
    async def finetune_status():
        return {**_shown(tuner.status), "counts": collecting.counts(folder)}


def _shown(status: dict) -> dict:
    """A copy of a fine-tune's status: its lines grow while it runs."""
    return {**status, "lines": list(status.get("lines", []))}


def _content_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _is_image(ctype: str) -> bool:
    return ctype.startswith("image/") or ctype == "application/octet-stream"


async def _answered(read, limiter, answer):
    """The API's one way through a request that sends an image: `read()` reads the body (within
    REQUEST_TIMEOUT) and gives the work to do on it in a worker thread, or a response that refuses it;
    `answer` makes the response of the work's result. Every error is the API's one sentence."""
    try:
        with anyio.fail_after(REQUEST_TIMEOUT):
            work = await read()
        if isinstance(work, Response):
            return work
        result = await anyio.to_thread.run_sync(work, limiter=limiter)
    except TimeoutError:
        return _error(408, f"the request body took over {REQUEST_TIMEOUT:.0f} s to arrive")
    except ClientDisconnect:
        log.warning("a client went away before sending its whole request")
        return Response(status_code=400)
    except (NoDigitError, ModelOutputError) as e:  # the request was fine; there is no answer to give
        return _error(422, _said(e))
    except MnistlabError as e:
        return _error(400, _said(e))
    return answer(result)


async def _read(request, ctype: str, model):
    """Read the request's body: the work to do on it in a worker thread (None for a content type
    the API does not take). With ?explain=1, the answer also says why (logits, saliency)."""
    explain = request.query_params.get("explain", "0") not in ("", "0", "false")
    if ctype == "application/json":
        body = await request.body()
        return lambda: model.predict_pixels(_pixels(body), PIXELS, explain=explain)
    if ctype == "multipart/form-data":
        upload = await _uploaded_file(request)
        return lambda: model.predict(upload, name=UPLOAD, explain=explain)
    if _is_image(ctype):
        body = await request.body()
        return lambda: model.predict(body, name=BODY, explain=explain)
    return None


def _pixels(body: bytes):
    """The "pixels" of a JSON body. Untrusted: any way json and NumPy can fail (deep nesting,
    400-digit numbers, wrong types) is one sentence."""
    import numpy as np

    try:
        given = json.loads(body)["pixels"]
        numbers = np.asarray(given).dtype.kind in "iuf"  # not strings such as "255", nor true and false
        pixels = np.asarray(given, dtype=np.float64)
    except Exception:  # ValueError, TypeError, KeyError, OverflowError, RecursionError, ...
        numbers = False
    if not numbers:
        raise MnistlabError("the JSON must be an object {\"pixels\": 28x28 array of numbers 0-255}.")
    return pixels


async def _uploaded_file(request) -> bytes:
    try:
        form = await request.form()
    except ClientDisconnect:
        raise
    except Exception:  # python-multipart's own errors for malformed bodies
        raise MnistlabError("malformed multipart body.") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise MnistlabError("the multipart body has no file field named 'file'.")
    return await upload.read()


class _HeaderDeadline:
    """A deadline for each request's headers, which uvicorn lacks: a client that connects and
    sends nothing, or half a request line, is disconnected after REQUEST_TIMEOUT seconds
    instead of holding its connection forever. Mixed into uvicorn's HTTP/1.1 protocols."""

    _deadline: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop  # the protocol's that this is mixed into, as are the super() methods
    transport: asyncio.Transport

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


class TimedH11Protocol(_HeaderDeadline, H11Protocol):
    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a new request's headers arrived
            self._disarm()


class TimedHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()


def http_protocol():
    """httptools' parser where it is installed (mnistlab[serve] brings it: faster), else h11."""
    return TimedHttpToolsProtocol if HttpToolsProtocol is not object else TimedH11Protocol


def serve(checkpoint: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          max_bytes: int = 2_000_000, workers: int = 1, collect: str | os.PathLike | None = None) -> None:
    """Serve the page and the API until Ctrl-C or SIGTERM, in `workers` processes.

    The model is loaded and the port bound before anything is printed, so a bad checkpoint or
    a port in use is one sentence and a non-zero exit, whatever the number of workers."""
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise MnistlabError("mnistlab serve needs FastAPI and uvicorn: pip install 'mnistlab[serve]'.") from None
    if collect is not None:
        if workers > 1:  # each process would swap in its own model, and two fine-tunes could run at once
            raise MnistlabError("--collect works with one server process: drop --workers.")
        collecting.writable_folder(collect)
    model = _load(str(checkpoint))
    sockets = bind_sockets(host, port, workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    print(f"serving {model.name} on {url(host, port)} with {workers} worker process"
          f"{'es' if workers > 1 else ''} (Ctrl-C to stop)", flush=True)
    if collect is not None:
        print(f"corrections go to {collect}; fine-tuned models to {Path(collect) / collecting.MODELS}", flush=True)
    if workers == 1:
        _run(model, sockets[0], max_bytes, threads, collect=collect, checkpoint=str(checkpoint))
    else:
        _supervise(str(checkpoint), sockets, max_bytes, threads)


def url(host: str, port: int) -> str:
    """The page's address; an IPv6 address goes in brackets (http://[::1]:8000/)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on host:port. With several, each has SO_REUSEPORT, so that the
    kernel spreads new connections evenly over the worker processes (with one shared socket,
    one process takes most of them). A port that anyone holds, another
    mnistlab server included, is refused: it is first bound alone, without SO_REUSEPORT."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      proto=socket.IPPROTO_TCP)[0]
    except socket.gaierror as e:
        raise MnistlabError(f"cannot listen on {host}: {e.strerror}.") from None

    def new_socket(reuseport: bool) -> socket.socket:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it
        # Nagle's algorithm held every keep-alive response back by 40 ms
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no conflict
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock

    sockets = [new_socket(reuseport=False)]
    try:
        sockets[0].bind(address)  # alone: fails if anyone holds the port
        if count > 1:
            sockets.pop().close()
            for _ in range(count):
                sockets.append(new_socket(reuseport=True))
                sockets[-1].bind(address)
        for sock in sockets:
            sock.listen(BACKLOG)
    except OSError as e:
        for sock in sockets:
            sock.close()
        if e.errno == errno.EADDRINUSE:
            raise MnistlabError(f"port {port} on {host} is already in use (another server?); "
                                "stop it or choose another --port.") from None
        raise MnistlabError(f"cannot listen on {host}:{port}: {e.strerror or e}.") from None
    return sockets


def _run(model, sock: socket.socket, max_bytes: int, threads: int, collect=None, checkpoint: str | None = None) -> None:
    import uvicorn

    app = create_app(model, max_bytes, threads, collect=collect, checkpoint=checkpoint)
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            http=http_protocol(), timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])  # stops gracefully on SIGINT and SIGTERM


def _supervise(checkpoint: str, sockets: list[socket.socket], max_bytes: int, threads: int) -> None:
    """One process per socket; SIGINT or SIGTERM to this one stops them all, and they stop by
    themselves if this one dies. A worker that dies takes the others down with one sentence."""
    ctx = multiprocessing.get_context("fork")  # the checkpoint is read again in each: nothing to pickle
    procs = [ctx.Process(target=_worker, args=(checkpoint, sock, sockets, max_bytes, threads, os.getpid()))
             for sock in sockets]
    for proc in procs:
        proc.start()
    for sock in sockets:
        sock.close()  # each worker holds its own; a dead worker's socket then leaves the group
    # explicit handlers: a server started in the background by a script (`mnistlab serve &`) inherits
    # SIGINT ignored, and `kill -INT` then stopped nothing
    old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        multiprocessing.connection.wait([p.sentinel for p in procs])
        dead = next(p for p in procs if p.exitcode is not None)
        raise MnistlabError(f"a server process stopped unexpectedly (exit code {dead.exitcode}); "
                            "the others were stopped too.")
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests under way
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker(checkpoint: str, sock: socket.socket, sockets: list[socket.socket], max_bytes: int, threads: int,
            parent: int) -> None:
    exit_with_parent(parent)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # uvicorn installs its own for both, once it runs
    signal.signal(signal.SIGINT, signal.default_int_handler)  # not the parent's, nor an inherited SIG_IGN
    for other in sockets:
        if other is not sock:
            other.close()
    try:
        _run(_load(checkpoint), sock, max_bytes, threads)
    except KeyboardInterrupt:
        pass


def _load(checkpoint: str):
    from ..data.preprocess import quiet_decoder_warnings
    from ..inference import load_model

    quiet_decoder_warnings()
    model = load_model(checkpoint)
    if model.backend.runtime.startswith("PyTorch"):  # a module or a .pt2 program
        import torch

        torch.set_num_threads(1)  # a 28x28 forward pass is too small to split; requests run side by side
    # everything loaded so far lives as long as the server: keep the garbage collector from
    # walking it again and again (full collections stalled requests by ~18 ms here)
    gc.collect()
    gc.freeze()
    return model
