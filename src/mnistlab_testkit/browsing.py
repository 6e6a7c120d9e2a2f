"""Browser tests' helpers: headless Debian chromium driven by Playwright (never a browser of its
own), a static file server, and digits drawn as a person would on the page's 280x280 pad."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ORT_DIST = REPO / "node_modules" / "onnxruntime-web" / "dist"  # scripts/test.sh installs it from npm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(path: Path, what: str) -> None:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {what}: scripts/test.sh installs it")
        pytest.skip(f"{what} is not installed (scripts/test.sh installs it)")


@contextlib.contextmanager
def browser_page(url, ready: str = "document.body.dataset.ready === 'true'", width: int = 1000):
    """A page of headless chromium at `url`, once the page says it is ready."""
    sync_api = pytest.importorskip("playwright.sync_api")
    need(Path(CHROMIUM), "Debian's chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(url)
            page.wait_for_function(ready, timeout=60000)
            yield page
        finally:
            browser.close()


def draw(page, strokes):
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
        page.mouse.up()


@contextlib.contextmanager
def static_server(folder: Path):
    """A plain static file server over `folder`: no mnistlab behind it."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def app_server(app):
    """An ASGI app (mnistlab's serving.create_app) under uvicorn in a thread of this process: its URL."""
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def digit_drawings(images: np.ndarray, seed: int = 0) -> list[bytes]:
    """Test digits as drawings on the page's 280x280 pad: dark ink on white, 100-280 px tall, anywhere."""
    rng = np.random.default_rng(seed)
    drawings = []
    for d in images:
        size = int(rng.integers(100, 281))
        canvas = Image.new("L", (280, 280), 255)
        canvas.paste(Image.fromarray(255 - d).resize((size, size), Image.Resampling.BICUBIC),
                     (int(rng.integers(0, 281 - size)), int(rng.integers(0, 281 - size))))
        buf = io.BytesIO()
        canvas.save(buf, format="PNG")
        drawings.append(buf.getvalue())
    return drawings


def lit_photo(digit: np.ndarray, rng: np.random.Generator, side: int = 280, tilt: float = 80.0) -> Image.Image:
    """A digit as a phone photographs it under a lamp to one side: dark ink on paper whose light falls by up to
    `tilt` grey levels from one corner to the other, with a little sensor noise; RGB, `side` pixels square."""
    size = int(rng.integers(side // 3, side * 2 // 3))
    canvas = np.zeros((side, side), np.float64)
    top, left = (int(v) for v in rng.integers(0, side - size, 2))
    ink = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    canvas[top:top + size, left:left + size] = np.asarray(ink, np.float64) / 255
    yy, xx = np.mgrid[0:side, 0:side] / side
    angle = rng.uniform(0, 2 * np.pi)
    paper = 185 + tilt / 2 * (np.cos(angle) * (2 * xx - 1) + np.sin(angle) * (2 * yy - 1)) / np.sqrt(2)
    gray = paper * (1 - canvas) + 60 * canvas + rng.normal(0, 3, canvas.shape)
    return Image.fromarray(np.clip(np.round(gray), 0, 255).astype(np.uint8)).convert("RGB")
