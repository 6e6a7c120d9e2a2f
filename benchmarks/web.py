"""The static page (`mnistlab export --format web`): its size, its agreement with Python, its speed.

    python benchmarks/web.py [--model robust-real] [--data-dir DIR] [--digits 1000] [--runs 200]

Size: the folder with the runtime from the CDN, and with --runtime node_modules/onnxruntime-web/dist.
Agreement: --digits test digits drawn on the page's 280x280 pad (dark on white, 100-280 px, anywhere),
preprocessed by preprocess.js and classified by onnxruntime-web (WebAssembly, one thread), against
preprocessing.py and the PyTorch model on the same drawings. Speed, medians of --runs in headless Debian
chromium: one answer as the page makes it while you draw (the pad read back, preprocessed, the model run on
the image), the saliency map it makes once the drawing rests (the model on the image's 169 occluded
copies), and an answer asked for while a map is being made (a stroke begun as soon as the drawing rested).
"""

import argparse
import base64
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import machine
from mnistlab import load_model, load_split
from mnistlab.data.preprocess import NoDigitError, preprocess
from mnistlab.export import export
from mnistlab_testkit.browsing import ORT_DIST, browser_page, digit_drawings, draw, static_server


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="robust-real")
    p.add_argument("--data-dir")
    p.add_argument("--digits", type=int, default=1000)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/web.py {' '.join(sys.argv[1:])}\n")
    with tempfile.TemporaryDirectory() as tmp:
        cdn = export(args.model, "web", Path(tmp) / "cdn")
        site = export(args.model, "web", Path(tmp) / "site", runtime=ORT_DIST)
        onnx_bytes = (cdn / "model.onnx").stat().st_size
        wasm_bytes = (site / "ort-wasm-simd-threaded.wasm").stat().st_size
        print(f"folder: {folder_size(cdn):,} bytes with the runtime from the CDN ({onnx_bytes:,} of them the model), "
              f"{folder_size(site):,} bytes with --runtime (the runtime's WebAssembly {wasm_bytes:,})")
        images = load_split("mnist", "test", args.data_dir)[0][:args.digits].numpy()
        drawings = digit_drawings(images)
        model = load_model(args.model)
        with static_server(site) as url, browser_page(url) as page:
            js_pixels, js_classes = [], []
            for i in range(0, len(drawings), 100):
                urls = ["data:image/png;base64," + base64.b64encode(d).decode() for d in drawings[i:i + 100]]
                out = page.evaluate("urls => mnistlabEngine.classifyDrawings(urls)", urls)
                js_pixels += list(np.frombuffer(base64.b64decode(out["pixels"]), np.uint8).reshape(-1, 28, 28))
                js_classes += out["classes"]
            page.evaluate("() => document.getElementById('clear').click()")
            draw(page, [[(80, 60), (200, 60), (120, 240)]])
            times, maps, busy = page.evaluate("""async (n) => {
                const pad = document.getElementById('pad'), t = [], m = [], b = [];
                const pause = () => new Promise((done) => setTimeout(done, 20));
                for (let i = 0; i < n + 10; i++) {
                    const t0 = performance.now();
                    const answer = await mnistlabEngine.predict({canvas: pad});
                    const t1 = performance.now();
                    await mnistlabEngine.saliency(answer);
                    // asked 20 ms into a map: the wait counts from then, even where the map holds the thread
                    const t2 = performance.now(), map = mnistlabEngine.saliency(answer);
                    await pause();
                    await mnistlabEngine.predict({canvas: pad});
                    if (i >= 10) { t.push(t1 - t0); m.push(t2 - t1); b.push(performance.now() - t2 - 20); }
                    await map;
                }
                return [t, m, b]; }""", args.runs)
    diffs, mine, theirs, no_digit = [], [], [], 0
    for drawing, pixels, cls in zip(drawings, js_pixels, js_classes):
        try:
            mine.append(preprocess(drawing))
        except NoDigitError:
            no_digit += 1
            continue
        diffs.append(int(np.abs(mine[-1].astype(int) - pixels.astype(int)).max()))
        theirs.append(cls)
    labels = np.array(model.classes)[model.predict_proba(np.stack(mine)).argmax(1)]  # the images preprocessed once
    same, n = sum(a == b for a, b in zip(labels, theirs)), len(diffs)
    print(f"agreement on {len(drawings)} drawn test digits ({no_digit} without a digit in both): preprocessed pixels "
          f"identical on {sum(d == 0 for d in diffs)}/{n}, within 1/255 on {sum(d <= 1 for d in diffs)}/{n} "
          f"(largest difference {max(diffs)}/255); same predicted class on {same}/{n}")
    print(f"in headless chromium (WebAssembly, 1 thread), over {len(times)}: one answer while drawing p50 "
          f"{statistics.median(times):.1f} ms, p90 {np.percentile(times, 90):.1f} ms; its saliency map once the "
          f"drawing rests p50 {statistics.median(maps):.1f} ms, p90 {np.percentile(maps, 90):.1f} ms; an answer asked "
          f"for while a map is made p50 {statistics.median(busy):.1f} ms, p90 {np.percentile(busy, 90):.1f} ms")


if __name__ == "__main__":
    main()
