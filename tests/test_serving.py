import contextlib
import io
import os
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mnistlab import load_split  # noqa: E402
from mnistlab.inference import load_model  # noqa: E402
from mnistlab.serving import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(trained_cnn):
    with TestClient(create_app(load_model(trained_cnn), max_bytes=100_000)) as c:
        yield c


@pytest.fixture(scope="module")
def seven_png(data_dir):
    x, y = load_split("mnist", "test", data_dir=data_dir, download=False)
    assert int(y[0]) == 7
    buf = io.BytesIO()
    Image.fromarray(255 - x[0].numpy()).resize((140, 140)).save(buf, format="PNG")
    return buf.getvalue(), x[0].numpy()


def test_page_and_health(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/api/predict" in page.text
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["classes"] == [str(i) for i in range(10)]


def test_predict_upload_raw_and_pixels(client, seven_png):
    png, pixels = seven_png
    for kwargs in ({"files": {"file": ("d.png", png, "image/png")}},
                   {"content": png, "headers": {"Content-Type": "image/png"}},
                   {"json": {"pixels": pixels.tolist()}}):
        r = client.post("/api/predict", **kwargs)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prediction"] == "7"
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-5
        assert np.asarray(body["preprocessed"]).shape == (28, 28)


@pytest.mark.parametrize("kwargs, status, message", [
    ({"content": b"hello", "headers": {"Content-Type": "image/png"}}, 400, "not an image"),
    ({"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "empty"),
    ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
    ({"json": {"pixels": [[1, 2], [3, 4]]}}, 400, "28x28"),
    ({"json": {"pixels": "abc"}}, 400, ""),
    ({"json": [1, 2, 3]}, 400, "JSON"),
    ({"files": {"other": ("d.png", b"x", "image/png")}}, 400, "no file field"),
    ({"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 400, ""),
    ({"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "send an image"),
])
def test_bad_requests_get_a_message_not_a_500(client, kwargs, status, message):
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_blank_drawing_is_422_no_digit(client):
    buf = io.BytesIO()
    Image.new("RGBA", (280, 280), (255, 255, 255, 255)).save(buf, format="PNG")
    r = client.post("/api/predict", content=buf.getvalue(), headers={"Content-Type": "image/png"})
    assert r.status_code == 422 and "no digit found" in r.json()["error"]


def test_bodies_over_the_limit_get_413(client):
    big = b"\0" * 150_000
    r = client.post("/api/predict", content=big, headers={"Content-Type": "image/png"})
    assert r.status_code == 413
    # the same without a Content-Length: streamed in chunks
    r = client.post("/api/predict", content=iter([big[:60_000], big[60_000:]]), headers={"Content-Type": "image/png"})
    assert r.status_code == 413


def test_decompression_bomb_upload(client):
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    r = client.post("/api/predict", content=buf.getvalue(), headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and "too large" in r.json()["error"]


def test_random_garbage_never_breaks_the_server(client):
    rng = np.random.default_rng(0)
    for i in range(60):
        body = rng.integers(0, 256, int(rng.integers(0, 3000))).astype(np.uint8).tobytes()
        ctype = ["image/png", "application/json", "multipart/form-data; boundary=abc", "image/jpeg"][i % 4]
        r = client.post("/api/predict", content=body, headers={"Content-Type": ctype})
        assert r.status_code in (400, 413, 422), (ctype, r.status_code, r.text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(trained_cnn):
    import uvicorn

    port = free_port()
    app = create_app(load_model(trained_cnn))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


CHROMIUM = "/usr/bin/chromium"


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
def browser_page(url):
    """A page of headless Debian chromium at `url`, driven by Playwright (never its own browser)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium: scripts/test.sh installs it")
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it as root)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#bars .bar').length === 10")
            yield page
        finally:
            browser.close()


@pytest.mark.parametrize("strokes, digit", [
    ([[(140, 40), (140, 240)]], "1"),
    ([[(80, 60), (200, 60), (120, 240)]], "7"),
])
def test_browser_draws_a_digit_and_sees_the_answer(live_server, strokes, digit):
    with browser_page(live_server) as page:
        draw(page, strokes)
        page.wait_for_function(f"document.getElementById('prediction').textContent === '{digit}'", timeout=10000)
        best = page.locator("#bars .bar.best span").first.text_content()
        assert best == digit
        page.click("#clear")
        assert page.locator("#prediction").text_content() == ""


def test_clear_while_a_prediction_is_in_flight_stays_clear(live_server):
    with browser_page(live_server) as page:
        page.route("**/api/predict", lambda route: (time.sleep(0.3), route.continue_()))  # a slow server
        draw(page, [[(80, 60), (200, 60), (120, 240)]])
        page.click("#clear")
        page.wait_for_timeout(2000)  # the answers to the drawing's requests arrive after the clear
        assert page.locator("#prediction").text_content() == ""
        assert page.locator("#bars .bar.best").count() == 0


def test_serve_command_with_two_worker_processes(trained_cnn, seven_png):
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    env = {**os.environ, "MNISTLAB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", str(trained_cnn), "--port", str(port),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "with 2 worker processes" in proc.stdout.readline()
        answers = []
        for _ in range(100):
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/predict", data=seven_png[0],
                                             headers={"Content-Type": "image/png"})
                answers.append(json.loads(urllib.request.urlopen(req, timeout=5).read())["prediction"])
                if len(answers) == 8:
                    break
            except OSError:
                time.sleep(0.1)
        assert answers == ["7"] * 8
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err


def test_serve_refuses_a_bad_checkpoint_before_listening(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bad.pt").write_bytes(b"junk")
    proc = subprocess.run([sys.executable, "-m", "mnistlab", "serve", str(tmp_path / "bad.pt"), "--workers", "2"],
                          capture_output=True, text=True, env={**os.environ, "MNISTLAB_OFFLINE": "1"}, timeout=60)
    assert proc.returncode == 1 and "bad.pt: not a readable checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
