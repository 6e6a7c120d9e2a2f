"""`mnistlab serve --collect DIR`: corrections saved from the page, and fine-tuning on them (collect.py)."""

import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mnistlab.data import own as owndata  # noqa: E402
from mnistlab.errors import MnistlabError  # noqa: E402
from mnistlab.inference import load_model  # noqa: E402
from mnistlab.serve.server import create_app  # noqa: E402
from mnistlab_testkit.fakes import alive, run_cli  # noqa: E402
from mnistlab_testkit.owndatasets import drawing  # noqa: E402


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "cache"))
    owndata._open.cache_clear()


@pytest.fixture(scope="module")
def shipped():
    return load_model("robust-real")


@pytest.fixture
def collecting(shipped, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("MNISTLAB_DATA", str(data_dir))  # the fine-tune's child process replays MNIST from there
    folder = tmp_path / "mine"
    with TestClient(create_app(shipped, collect=folder, checkpoint="robust-real")) as c:
        yield c, folder


def png(shape: str, seed: int, side: int = 200) -> bytes:
    buf = io.BytesIO()
    drawing(shape, np.random.default_rng(seed), side=side).save(buf, format="PNG")
    return buf.getvalue()


def correct(client, body: bytes, label: str, ctype: str = "image/png"):
    return client.post(f"/api/correct?label={label}", content=body, headers={"Content-Type": ctype})


def files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_correction_is_saved_as_drawn_and_as_the_model_saw_it(collecting):
    client, folder = collecting
    body = png("ring", 0)
    r = correct(client, body, "6")
    assert r.status_code == 200, r.text
    saved = sorted((folder / "6").glob("*.png"))
    seen = sorted((folder / "6" / "seen").glob("*.png"))
    assert len(saved) == len(seen) == 1 and saved[0].name == seen[0].name
    assert saved[0].read_bytes() == body  # the drawing as sent
    answered = client.post("/api/predict", content=body, headers={"Content-Type": "image/png"}).json()
    assert (np.asarray(Image.open(seen[0])) == np.asarray(answered["preprocessed"], np.uint8)).all()
    assert r.json()["counts"] == {"6": 1}
    correct(client, png("ring", 1), "6")
    assert len(list((folder / "6").glob("*.png"))) == 2  # a new name each time
    correct(client, body, "6")  # the first drawing again, as a double-click sends it: kept once
    assert len(list((folder / "6").glob("*.png"))) == 2 and len(list((folder / "6" / "seen").glob("*.png"))) == 2
    assert client.get("/healthz").json()["collect"] is True


@pytest.mark.parametrize("query, body, ctype, status, message", [
    ("label=x", "ring", "image/png", 400, "not one of the model's classes"),
    ("label=", "ring", "image/png", 400, "not one of the model's classes"),
    ("label=..%2F..%2Fetc", "ring", "image/png", 400, "not one of the model's classes"),
    ("", "ring", "image/png", 400, "say which class"),
    ("label=3", b"not an image", "image/png", 400, "not an image"),
    ("label=3", b"", "image/png", 400, "empty"),
    ("label=3", "blank", "image/png", 422, "digit"),
    ("label=3", b"3", "text/plain", 415, "send the drawing as an image"),
])
def test_bad_corrections_get_a_sentence_and_write_nothing(collecting, query, body, ctype, status, message):
    client, folder = collecting
    if body == "ring":
        body = png("ring", 0)
    elif body == "blank":
        buf = io.BytesIO()
        Image.new("L", (200, 200), 255).save(buf, format="PNG")
        body = buf.getvalue()
    r = client.post(f"/api/correct?{query}", content=body, headers={"Content-Type": ctype})
    assert r.status_code == status and message in r.json()["error"], r.text
    assert "request body" not in r.json()["error"]  # the server's own name for the image means nothing to anyone
    assert files(folder) == []


def test_an_unwritable_collect_folder_is_refused(shipped, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a folder cannot be made under a file, even by root
    with pytest.raises(MnistlabError, match=r"^--collect .*a-file/mine: cannot write there \(.*\); choose a folder"):
        create_app(shipped, collect=blocker / "mine", checkpoint="robust-real")
    r = run_cli("serve", "robust-real", "--port", "1", "--collect", blocker / "mine")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--collect" in r.stderr and "cannot write" in r.stderr
    r = run_cli("serve", "robust-real", "--workers", "2", "--collect", tmp_path / "ok")
    assert r.returncode == 1 and "--collect works with one server process" in r.stderr and r.stdout == ""


def test_too_few_corrections_is_one_sentence(collecting):
    client, folder = collecting
    correct(client, png("ring", 0), "6")
    correct(client, png("ring", 1), "6")
    correct(client, png("bar", 2), "7")
    r = client.post("/api/finetune")
    assert r.status_code == 400 and r.json()["error"].startswith("too few corrections to fine-tune on (2 of 6, 1 of 7)")
    assert client.get("/api/finetune").json()["state"] == "idle"


def wait(client, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = client.get("/api/finetune").json()
        if s["state"] != "running":
            return s
        time.sleep(0.2)
    raise AssertionError("the fine-tune did not finish")


def test_one_fine_tune_at_a_time_a_killed_one_changes_nothing_and_a_finished_one_is_swapped_in(collecting, shipped):
    client, folder = collecting
    # rings called 6, bars called 7: shapes the shipped model reads otherwise
    for i in range(4):
        assert correct(client, png("ring", 10 + i), "6").status_code == 200
        assert correct(client, png("bar", 20 + i), "7").status_code == 200
    probe = [png("ring", 30), png("bar", 31)]

    def answers():
        return [client.post("/api/predict", content=b, headers={"Content-Type": "image/png"}).json()["prediction"]
                for b in probe]
    before = answers()
    assert before != ["6", "7"]

    r = client.post("/api/finetune")
    assert r.status_code == 202 and r.json()["state"] == "running"
    second = client.post("/api/finetune")
    assert second.status_code == 409 and "already running" in second.json()["error"]
    os.kill(_child(client), signal.SIGKILL)
    s = wait(client)
    assert s["state"] == "failed"
    assert s["error"] == "the fine-tune ended before it saved a model (it was stopped from outside)."
    assert answers() == before and client.get("/healthz").json()["model"] == shipped.name

    assert client.post("/api/finetune").status_code == 202
    child = _child(client)
    s = wait(client)
    assert s["state"] == "done", s
    assert s["after"][1] == 2 and s["after"][0] >= s["before"][0]
    assert os.path.isfile(s["model_path"]) and ".models" in s["model_path"]
    assert answers() == ["6", "7"]
    assert load_model(s["model_path"]).predict(probe[0]).label == "6"  # predict and export can use it
    # served before the child's figures on MNIST's test set (10,000 images' features, uncached here) are done
    assert alive(child)
    summary = Path(s["model_path"]).with_name("finetune.json")
    assert json.loads(summary.read_text())["base_after"] is None
    # a click meanwhile stops them: the last model's folder keeps its two files whole, and the new fine-tune runs
    assert client.post("/api/finetune").status_code == 202
    for _ in range(200):
        if not alive(child):
            break
        time.sleep(0.05)
    assert not alive(child)
    assert sorted(p.name for p in summary.parent.iterdir()) == ["finetune.json", "model.pt"]
    assert load_model(s["model_path"]).predict(probe[0]).label == "6"
    assert wait(client)["state"] == "done"


def _child(client) -> int:
    """The fine-tune's child process (`mnistlab train --init ...`), not the one that prepares it."""
    from mnistlab_testkit.fakes import children

    def command(pid: int) -> bytes:
        try:
            return open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:  # gone meanwhile
            return b""

    for _ in range(100):
        kids = [k for k in children(os.getpid()) if b"--init" in command(k)]
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("no fine-tune process")


def flagged_one(x: float, y: float, length: float) -> list[list[tuple[float, float]]]:
    """A 1 with a long flag, as many hands write it: a model trained on MNIST may read it as a 7."""
    return [[(x - 70, y + 60), (x, y), (x, y + length)]]


def said(answer: dict) -> str:
    """What the page shows for an answer."""
    return answer["answer"]


def test_the_page_walks_the_loop_draw_correct_fine_tune_new_answer(shipped, tmp_path, data_dir, monkeypatch):
    """Whatever the served model first makes of the flagged 1s: taught them, the server swaps in a model that
    reads them as 1s, and still reads a 7 as a 7. The 1 asked about afterwards is one the model first read
    wrong where there is one; where it read them all right, the swap shows in its answer to the same pixels."""
    from mnistlab_testkit.browsing import app_server, browser_page, draw

    monkeypatch.setenv("MNISTLAB_DATA", str(data_dir))
    with app_server(create_app(shipped, collect=tmp_path / "mine", checkpoint="robust-real")) as url:
        with browser_page(url) as page:
            def ask(png: str) -> dict:
                """The served model's answer to a drawing, asked as the page asks."""
                return page.evaluate("async (url) => mnistlabEngine.predict({file: await (await fetch(url)).blob()})",
                                     png)

            def drawn(strokes, label: str | None = None) -> str:
                """Draw on a cleared pad until the page shows its answer, and correct that as `label`: the drawing."""
                page.click("#clear")
                draw(page, strokes)
                png = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
                shown = said(ask(png))  # the answer to the whole drawing, which the page shows last
                page.wait_for_function("s => document.getElementById('prediction').textContent === s", arg=shown,
                                       timeout=20_000)
                if label is not None:
                    page.click(f"#correct button[data-label='{label}']")
                    page.wait_for_function(
                        f"document.getElementById('correct-note').textContent.includes('/{label}/')")
                return png

            assert page.locator("#correct-box").is_hidden() and page.locator("#finetune").is_visible()
            page.click("#finetune")  # nothing collected yet
            page.wait_for_function("document.getElementById('finetune-status').textContent.includes('too few')")
            seven = [[(60, 60), (200, 60), (120, 240)]]
            ones = [flagged_one(160, 40, 200), flagged_one(150, 50, 190), flagged_one(170, 35, 210)]
            pngs = [drawn(strokes, "1") for strokes in ones]
            for strokes in ([[(70, 50), (210, 50), (110, 230)]], seven):
                drawn(strokes, "7")
            assert len(list((tmp_path / "mine" / "1").glob("*.png"))) == 3
            before = [ask(png) for png in pngs]
            probe = next((i for i, answer in enumerate(before) if answer["rejected"] or answer["prediction"] != "1"), 0)
            model = page.locator("#model").text_content()

            page.click("#finetune")
            page.wait_for_function("document.getElementById('finetune-status').textContent.startsWith('Fine-tuned')",
                                   timeout=400_000)
            status = page.locator("#finetune-status").text_content()
            assert "Held-out corrected digits: before" in status and ".models/finetuned-" in status
            after = ask(pngs[probe])
            assert after["logits"] != before[probe]["logits"]  # the same pixels, another model: it was swapped in
            assert page.locator("#model").text_content() != model
            assert not after["rejected"] and after["prediction"] == "1"
            for strokes, label in ((ones[probe], "1"), (seven, "7")):  # the page's new answer; a 7 is still a 7
                page.click("#clear")
                draw(page, strokes)
                page.wait_for_function(f"document.getElementById('prediction').textContent.startsWith('{label}')",
                                       timeout=20_000)  # "7", or "7 or 1?" where the model is less sure


def test_without_collect_there_is_nothing_to_correct(shipped):
    with TestClient(create_app(shipped)) as client:
        assert client.get("/healthz").json()["collect"] is False
        r = correct(client, png("ring", 0), "6")
        assert r.status_code == 404 and "error" in r.json()
        assert client.post("/api/finetune").status_code == 404


def test_a_fine_tune_child_ends_when_its_server_is_killed(tmp_path):
    """serve's fine-tune child carries PARENT_ENV: after a kill -9 of the server, which no handler sees, it ends."""
    import subprocess
    import sys

    from mnistlab.launch import PARENT_ENV, free_port

    pid_file = tmp_path / "child.pid"
    # a stand-in server: starts a long-running `mnistlab` child as FineTune does, says its pid, then waits
    parent = subprocess.Popen([sys.executable, "-c", f"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "--port", "{free_port()}"],
                         env={{**os.environ, "{PARENT_ENV}": str(os.getpid())}},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(600)
"""])
    try:
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        child = int(pid_file.read_text())
        time.sleep(3.0)
        assert alive(child), "the stand-in's child should be serving while its parent lives"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not alive(child):  # gone, or exited and awaiting init's reaping
                return
            time.sleep(0.2)
        pytest.fail("the fine-tune child kept running after its server was killed")
    finally:
        parent.kill()
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass

