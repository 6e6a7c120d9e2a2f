"""`mnistlab export --format web`: a static site that runs the model in the browser (onnxruntime-web)."""

import base64
import hashlib
import io
import os

import numpy as np
import pytest

pytest.importorskip("onnx")
from mnistlab import MnistlabError, load_model, load_split  # noqa: E402
from mnistlab.data.preprocess import NoDigitError, preprocess  # noqa: E402
from mnistlab.export import ORT_WEB_CDN, ORT_WEB_FILES, ORT_WEB_VERSION, export  # noqa: E402
from mnistlab.lesson import cross_entropy  # noqa: E402
from mnistlab_testkit.browsing import (  # noqa: E402
    ORT_DIST,
    browser_page,
    digit_drawings,
    draw,
    lit_photo,
    need,
    static_server,
)
from mnistlab_testkit.fakes import run_cli  # noqa: E402

MODEL = "robust-real"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    need(ORT_DIST, "onnxruntime-web from npm (node_modules)")
    return export(MODEL, "web", tmp_path_factory.mktemp("web") / "site", runtime=ORT_DIST)


def test_the_pinned_runtime_hashes_are_npms(tmp_path):
    need(ORT_DIST, "onnxruntime-web from npm (node_modules)")
    assert f"ONNX Runtime Web v{ORT_WEB_VERSION}" in (ORT_DIST / "ort.wasm.min.js").read_text()[:200]
    for name, sri in ORT_WEB_FILES.items():
        digest = base64.b64encode(hashlib.sha384((ORT_DIST / name).read_bytes()).digest()).decode()
        assert sri == f"sha384-{digest}", name
    page = (export(MODEL, "web", tmp_path / "cdn") / "index.html").read_text()
    assert f'src="{ORT_WEB_CDN}ort.wasm.min.js" integrity="{ORT_WEB_FILES["ort.wasm.min.js"]}"' in page
    assert {p.name for p in (tmp_path / "cdn").iterdir()} == {"index.html", "app.js", "preprocess.js", "zip.js",
                                                             "browser.js", "model.onnx", "model.json"}


def test_the_site_works_from_a_static_server_with_nothing_from_outside(site):
    outside = []
    with static_server(site) as url, browser_page(url) as page:
        page.route("**/*", lambda route: (outside.append(route.request.url), route.abort())
                   if not route.request.url.startswith(url) else route.continue_())
        page.reload()
        page.wait_for_function("document.body.dataset.ready === 'true'", timeout=60000)
        draw(page, [[(140, 40), (140, 240)]])
        page.wait_for_function("document.getElementById('prediction').textContent.startsWith('1')", timeout=20000)
        assert "onnxruntime-web" in page.locator("#model").text_content()
        assert page.locator("#runner-up").text_content().startswith("runner-up: ")
        shot = os.environ.get("MNISTLAB_SCREENSHOTS")  # scripts/screenshots.sh: the README's pictures
        if shot:
            page.screenshot(path=os.path.join(shot, "web.png"), full_page=True)
    assert outside == []


def test_the_map_of_why_comes_once_the_drawing_rests_and_is_pythons(site):
    with static_server(site) as url, browser_page(url) as page:
        page.evaluate("""() => { const engine = window.mnistlabEngine, saliency = engine.saliency;
            window.maps = 0; engine.saliency = (...args) => { window.maps += 1; return saliency(...args); }; }""")
        draw(page, [[(80, 60), (200, 60), (120, 240)]])  # one stroke of 16 moves, each answered
        page.wait_for_function("window.mnistlabAnswer && window.mnistlabAnswer.saliency !== null", timeout=20000)
        page.wait_for_timeout(300)
        answer, maps = page.evaluate("() => [window.mnistlabAnswer, window.maps]")
        stopped = page.evaluate("""async () => { let chunks = 0;  // an answer replaced after the first chunk
            return await mnistlabEngine.saliency(window.mnistlabAnswer, () => chunks++ < 1); }""")
    assert maps == 1  # for the answer to the finished drawing, none for those while it was drawn
    assert stopped is None
    expected = load_model(MODEL).explain(np.array(answer["preprocessed"], np.uint8))
    assert answer["prediction"] == expected.label
    np.testing.assert_allclose(answer["saliency"], expected.saliency, atol=2e-3 * np.abs(expected.saliency).max())


def test_the_page_prepares_and_classifies_drawings_as_python_does(site, data_dir):
    """1,000 test digits drawn on the page's pad: preprocessed in JavaScript and classified by
    onnxruntime-web, against preprocessing.py and the PyTorch checkpoint on the same drawings."""
    images = load_split("mnist", "test", data_dir)[0][:1000].numpy()
    within, same_class, found = _as_python_does(site, digit_drawings(images))
    assert within >= 0.99 * found and same_class == found, (within, same_class, found)


def test_the_page_levels_photos_under_uneven_light_as_python_does(site, data_dir):
    """Photos of digits filling the pad, their paper tilted by up to 120 grey levels (level_light's port)."""
    images = load_split("mnist", "test", data_dir)[0][1000:1100].numpy()
    rng = np.random.default_rng(0)
    photos = []
    for i, d in enumerate(images):
        buf = io.BytesIO()
        lit_photo(d, rng, side=280, tilt=float(i % 5) * 30).save(buf, format="PNG")
        photos.append(buf.getvalue())
    within, same_class, found = _as_python_does(site, photos)
    assert found == len(photos) and within == found and same_class == found, (within, same_class, found)


def test_the_page_reads_hard_inputs_as_python_does(site, data_dir):
    """Ink along the pad's edge (a thick 8 covering most of the border), tight crops, faint pencil, a small digit in
    a large photo, a vignette, a straight-edged shadow, paper in dim light, chalk on a grey board, a ruled or squared
    page, a page with pieces of faint lines and dirt near its edges, a ruled page seen at a slant, one line of a
    page ruled wider than the crop, a grainy ruled page, a digit's lighter bar, a fine pen, a frame, 1s cropped tight,
    specks of dust, low-resolution scans enlarged in blocks, their 17 levels saved as they are: the stretch, the
    blocks, the paper's light, floor, lines and the digit's box as preprocessing.py finds them, to the pixel."""
    from PIL import Image

    from mnistlab_testkit import hard_inputs as hard

    images = load_split("mnist", "test", data_dir)[0][1100:1120].numpy()
    made = [hard.with_margin(hard.seven_along_the_top(top, brush), brush)[0] for top in (0, 2) for brush in (18, 40)]
    made += [hard.with_margin(hard.eight_along_the_top(brush), brush)[0] for brush in (6, 18, 40)]
    for i, d in enumerate(images):
        rng = np.random.default_rng(i)
        made += [hard.tight_crop(d)[0], hard.faint_photo(d, rng)[0], hard.small_in_a_photo(d, rng)[0],
                 hard.vignette_photo(d, rng)[0], hard.shadowed_photo(d, rng)[0], hard.dim_photo(d, rng)[0],
                 hard.chalk_on_a_board(d, rng)[0], hard.lined_page(d, rng)[0], hard.dashed_page(d, rng)[0],
                 hard.slanted_page(d, rng)[0], hard.dusty(d, rng)[0], hard.one_line_page(d, rng)[0],
                 hard.grainy_page(d, rng)[0]]
    made += [hard.pen_digit(digit, side, side // 280) for digit in range(10) for side in (280, 560)]  # a fine pen
    made += [hard.framed(digit, 280, inset, width)[0] for digit in range(10) for inset, width in ((5, 4), (0, 3))]
    made += [hard.lighter_bar(digit, grey)[0] for digit in (4, 7) for grey in (160, 200)]  # no page's line
    x, y = load_split("mnist", "train", data_dir)[:2]
    made += [hard.tight_crop(d, 64)[0] for d in x[:400][y[:400] == 1][:16].numpy()]  # ink on most of the tiles
    for d in x[:6].numpy():  # 8x8 and 12x12 scans in blocks: by a whole factor, by none, behind paper added after
        small, finer = hard.low_resolution_scan(d), hard.low_resolution_scan(d, 12)
        made += [hard.enlarged(small, 280)[0], hard.enlarged(255 - finer, 280)[0], hard.enlarged(small, 200, 40)[0]]
        levels = hard.low_resolution_scan(d, depth=16)  # the 17 levels as they are: stretched
        made += [hard.enlarged(255 - levels, 280)[0], hard.enlarged(levels, 280)[1]]  # in blocks; smooth
    pngs = []
    for img in made:  # on the page's pad, which the test draws each image onto whole
        buf = io.BytesIO()
        img.convert("RGB").resize((280, 280), Image.Resampling.BICUBIC).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    within, same_class, found = _as_python_does(site, pngs)
    # as for drawings: a centre of mass that falls half-way between two pixels may round either way (one here)
    assert found == len(pngs) and within >= 0.98 * found and same_class == found, (within, same_class, found)


def _as_python_does(site, pngs: list[bytes]) -> tuple[int, int, int]:
    """(images whose 28x28 pixels the page made within one grey level of preprocessing.py's, images the page
    classified as the PyTorch checkpoint did, images in which Python found a digit); where Python finds none,
    the page must find none either."""
    from PIL import Image

    model = load_model(MODEL)
    js_pixels, js_classes = [], []
    with static_server(site) as url, browser_page(url) as page:
        for i in range(0, len(pngs), 100):
            urls = ["data:image/png;base64," + base64.b64encode(d).decode() for d in pngs[i:i + 100]]
            out = page.evaluate("urls => mnistlabEngine.classifyDrawings(urls)", urls)
            sums = [int(np.asarray(Image.open(io.BytesIO(d)).convert("RGBA"), np.int64).sum()) for d in pngs[i:i + 100]]
            assert out["sums"] == sums  # the page drew exactly these pixels
            js_pixels += list(np.frombuffer(base64.b64decode(out["pixels"]), np.uint8).reshape(-1, 28, 28))
            js_classes += out["classes"]
    worst, mine, theirs = [], [], []
    for png, pixels, cls in zip(pngs, js_pixels, js_classes):
        try:
            mine.append(preprocess(png))
        except NoDigitError:
            assert cls is None
            continue
        worst.append(int(np.abs(mine[-1].astype(int) - pixels.astype(int)).max()))
        theirs.append(cls)
    labels = np.array(model.classes)[model.predict_proba(np.stack(mine)).argmax(1)] if mine else []
    return sum(w <= 1 for w in worst), sum(a == b for a, b in zip(labels, theirs)), len(worst)


def test_the_lesson_on_the_page_computes_as_the_lesson_command(site):
    from mnistlab.lesson import softmax

    with static_server(site) as url, browser_page(url) as page:
        draw(page, [[(80, 60), (200, 60), (120, 240)]])
        page.wait_for_function("document.getElementById('prediction').textContent !== ''", timeout=20000)
        page.click("#truth button[value='7']")
        logits = np.array(page.evaluate("() => window.mnistlabAnswer.logits"))
        shown = [[td.text_content() for td in row.locator("td").all()] for row in page.locator("#logits tr").all()]
        loss = float(page.locator("#loss").get_attribute("data-value"))
    # the same numbers as `mnistlab lesson` computes them: its softmax and its cross-entropy
    assert [row[1] for row in shown] == [f"{z:.3f}" for z in logits]
    assert [row[2] for row in shown] == [f"{p:.4f}" for p in softmax(logits)]
    assert loss == pytest.approx(cross_entropy(logits[None], np.array([7])), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("flags, message", [
    (["--runtime", "/nonexistent"], "--runtime /nonexistent: no ort.wasm.min.js there"),
    (["--probs"], "the web page and the Hugging Face folder take logits"),
])
def test_export_web_refuses_what_it_cannot_do(tmp_path, flags, message):
    proc = run_cli("export", MODEL, tmp_path / "site", "--format", "web", *flags)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_export_web_never_writes_over_other_files(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(MnistlabError, match="holds other files"):
        export(MODEL, "web", tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    first = export(MODEL, "web", tmp_path / "site")
    again = export("classic-cnn", "web", tmp_path / "site")  # an earlier export is replaced, whole
    assert first == again and '"cnn"' in (again / "model.json").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_static_page_keeps_corrections_and_downloads_them_as_a_dataset_zip(site, tmp_path):
    import io
    import zipfile

    from PIL import Image

    with static_server(site) as url, browser_page(url) as page:
        assert page.locator("#download").is_hidden() and page.locator("#finetune").is_hidden()
        for x in (120, 160):  # two drawings of a 1 that should be a 7 (a test of the layout, not of the model)
            page.click("#clear")
            draw(page, [[(x, 40), (x, 240)]])
            page.wait_for_function("document.getElementById('prediction').textContent !== ''", timeout=20000)
            page.dblclick("#correct button[data-label='7']")  # a double-click keeps the drawing once
        page.wait_for_function("document.getElementById('correct-note').textContent.includes('2 corrections')")
        page.wait_for_timeout(500)
        assert "2 corrections" in page.locator("#correct-note").text_content()
        page.reload()  # kept in the browser across a reload
        page.wait_for_function("document.body.dataset.ready === 'true'", timeout=60000)
        with page.expect_download() as download:
            page.click("#download")
        path = tmp_path / "corrections.zip"
        download.value.save_as(path)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        names = sorted(z.namelist())
        assert len(names) == 4 and all(n.startswith("7/") for n in names)
        drawings = [n for n in names if "/seen/" not in n]
        assert Image.open(io.BytesIO(z.read(drawings[0]))).size == (280, 280)
        seen = [n for n in names if "/seen/" in n]
        assert len(seen) == 2 and Image.open(io.BytesIO(z.read(seen[0]))).size == (28, 28)
        z.extractall(tmp_path / "ds")
    assert preprocess(tmp_path / "ds" / drawings[0]).shape == (28, 28)  # the folder layout train --dataset reads
