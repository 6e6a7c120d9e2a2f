"""Inference speed of exported models: PyTorch eager against ONNX Runtime (fp32 and int8).

    python benchmarks/export.py [--data-dir DIR] [--models mlp cnn fast]

Each model is trained briefly (1 epoch; speed does not depend on the weights), exported,
and timed on real, already normalised test images: the module's forward pass under
torch.inference_mode against InferenceSession.run, images per second at batch 1 (median of
500 calls) and at batch 1,000 (median of 20 calls), both libraries on their default thread
settings. Test accuracy on the 10,000 images goes through mnistlab's whole prediction path
for each variant; the model file's size is given too.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import machine
from mnistlab import RunConfig, load_model, load_split, train
from mnistlab.export import export


def rate(fn, x, reps):
    for _ in range(10):
        fn(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return len(x) / float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--models", nargs="+", default=["mlp", "cnn", "bn-cnn"])
    args = p.parse_args()
    images, labels = load_split("mnist", "test", data_dir=args.data_dir)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/export.py {' '.join(sys.argv[1:])}\n")
    print("| model | runtime | file size | test accuracy | batch 1: images/s | batch 1000: images/s "
          "| batch-1 speed-up over eager |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            cfg = RunConfig(model=name, epochs=1, optimizer="adam", lr=0.003, batch_size=128)
            ckpt = train(cfg, out=Path(d) / name, data_dir=args.data_dir, progress=False).model_path
            clf = load_model(ckpt)
            x_all = ((images.float() / 255 - clf.card.mean) / clf.card.std).unsqueeze(1)
            if clf.backend.channels_last:
                x_all = x_all.contiguous(memory_format=torch.channels_last)

            def eager(x, module=clf.backend.module):
                with torch.inference_mode():
                    return module(x)

            predict_eager = clf.predict_proba

            variants = [("PyTorch eager", eager, x_all, ckpt, predict_eager)]
            for label, int8 in (("ONNX Runtime fp32", False), ("ONNX Runtime int8", True)):
                path = export(ckpt, "onnx", Path(d) / f"{name}{'-int8' if int8 else ''}.onnx", int8=int8,
                              data_dir=args.data_dir)
                onnx_model = load_model(path)

                def run(x, s=onnx_model.backend.session):
                    return s.run(None, {"images": x})

                variants.append((label, run, x_all.contiguous().numpy(), path, onnx_model.predict_proba))
            base = None
            for label, fn, x, path, predict in variants:
                acc = (np.concatenate([np.asarray(predict(c)) for c in np.array_split(images.numpy(), 10)]).argmax(1)
                       == labels.numpy()).mean()
                one, thousand = rate(fn, x[:1], 500), rate(fn, x[:1000], 20)
                base = base or one
                print(f"| {name} | {label} | {Path(path).stat().st_size / 1024:,.0f} KiB | {100 * acc:.2f}% "
                      f"| {one:,.0f} | {thousand:,.0f} | {one / base:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
