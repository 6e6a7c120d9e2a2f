"""`mnistlab serve`: a local page to draw a digit on, and a small JSON API (Starlette/FastAPI + uvicorn).

POST /api/predict takes an image (multipart field "file", or the raw bytes with an image
content type) or JSON {"pixels": 28x28 array, ink high, 0-255} and answers the whole
distribution. GET /healthz says the server is up. Bodies over the limit get 413, bad ones
400 or 422 with a message; no request can produce a traceback.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from importlib import resources

from .errors import MnistlabError
from .preprocessing import NoDigitError

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
except ImportError:  # the serve extra is not installed
    FastAPI = None

log = logging.getLogger("mnistlab.serving")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: refuse bodies over max_bytes with 413, by Content-Length or while streaming."""

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

        await self.app(scope, limited_receive, guarded_send)

    def _too_large(self, scope, receive, send):
        # built only when needed: a response object per request would sit on the hot path
        return _error(413, f"request body over the limit of {self.max_bytes:,} bytes")(scope, receive, send)


def create_app(predictor, max_bytes: int = 2_000_000):
    """The ASGI app around one loaded model (an inference.Classifier, loaded once, shared by every request)."""
    if FastAPI is None:
        raise MnistlabError("mnistlab serve needs FastAPI and uvicorn: pip install 'mnistlab[serve]'.")
    app = FastAPI(title="mnistlab", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("mnistlab").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": predictor.name, "classes": list(predictor.classes)}

    @app.post("/api/predict")
    async def predict(request: Request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                pred = predictor.predict_pixels(_pixels(await request.body()), "pixels")
            elif ctype == "multipart/form-data":
                pred = predictor.predict(await _uploaded_file(request), name="uploaded file")
            elif ctype.startswith("image/") or ctype == "application/octet-stream":
                pred = predictor.predict(await request.body(), name="request body")
            else:
                return _error(415, "send an image (multipart field 'file', or raw bytes with an image content "
                                   "type) or JSON {\"pixels\": 28x28 array}")
        except NoDigitError as e:
            return _error(422, str(e))
        except MnistlabError as e:
            return _error(400, str(e))
        # a plain JSONResponse: FastAPI's generic encoder costs more than the model on a 28x28 list
        return JSONResponse({**pred.to_dict(len(predictor.classes)), "preprocessed": pred.preprocessed.tolist()})

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug of ours: log it, never show a traceback
        log.exception("unexpected error")
        return _error(500, "internal error")

    return BodyLimit(app, max_bytes)


def _pixels(body: bytes):
    import numpy as np

    try:
        data = json.loads(body)
        pixels = np.asarray(data["pixels"], dtype=np.float64)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise MnistlabError("the JSON must be an object {\"pixels\": 28x28 array of numbers 0-255}.") from None
    return pixels


async def _uploaded_file(request) -> bytes:
    try:
        form = await request.form()
    except Exception:  # python-multipart's own errors for malformed bodies
        raise MnistlabError("malformed multipart body.") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise MnistlabError("the multipart body has no file field named 'file'.")
    return await upload.read()


def serve(checkpoint: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          max_bytes: int = 2_000_000, workers: int = 1) -> None:
    """Load the model once per worker process and serve the page and the API until Ctrl-C."""
    try:
        import uvicorn
    except ImportError:
        raise MnistlabError("mnistlab serve needs FastAPI and uvicorn: pip install 'mnistlab[serve]'.") from None
    predictor = _load(str(checkpoint))  # fails here, with one sentence, before any worker starts
    print(f"serving {predictor.name} on http://{host}:{port}/ with {workers} worker process"
          f"{'es' if workers > 1 else ''} (Ctrl-C to stop)", flush=True)
    if workers == 1:
        uvicorn.run(create_app(predictor, max_bytes), host=host, port=port, log_level="warning", access_log=False)
        return
    _serve_reuseport(str(checkpoint), host, port, max_bytes, workers)


def _serve_reuseport(checkpoint: str, host: str, port: int, max_bytes: int, workers: int) -> None:
    """Worker processes, each with its own listening socket on the same port (SO_REUSEPORT).

    The kernel then spreads new connections evenly over the workers; with one shared socket
    (uvicorn's own --workers) one process measured taking most of 16 connections.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_reuseport_worker, args=(checkpoint, host, port, max_bytes), daemon=True)
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            proc.terminate()


def _reuseport_worker(checkpoint: str, host: str, port: int, max_bytes: int) -> None:
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    config = uvicorn.Config(create_app(_load(checkpoint), max_bytes), log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass


def _load(checkpoint: str):
    from .inference import load_model

    predictor = load_model(checkpoint)
    _one_thread_per_request(predictor)
    # everything loaded so far lives as long as the server: keep the garbage collector from
    # walking it again and again (full collections stalled requests by ~18 ms here)
    gc.collect()
    gc.freeze()
    return predictor


def _one_thread_per_request(predictor) -> None:
    # a 28x28 forward pass is too small to split over cores; one thread avoids contention
    if predictor.backend.runtime == "PyTorch":
        import torch

        torch.set_num_threads(1)
