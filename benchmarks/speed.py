"""Time-to-accuracy of every preset, inference throughput of every model, peak memory.

    python benchmarks/speed.py [--device cpu|cuda] [--presets classic-mlp classic-cnn fast accurate]
                               [--runs N] [--data-dir DIR] [--compile [MODE]]

Each preset runs in its own process: one warm-up run first (reported apart: on a GPU it
pays for cuDNN's autotuning and any compilation), then N seeded runs. Training seconds
exclude evaluation; accuracy is on the full 10,000-image test set. Peak memory is the
process's peak resident set (CPU) or peak allocated GPU memory.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import machine, summary

PRESETS = {  # name -> (preset, overrides)
    "classic-mlp": ("classic", {"model": "mlp"}),
    "classic-cnn": ("classic", {"model": "cnn"}),
    "fast": ("fast", {}),
    "accurate": ("accurate", {}),
    "best": ("best", {}),  # about 10 minutes a run on the 2-core CPU
}
DEFAULT_RUNS = {"classic-mlp": 3, "classic-cnn": 3, "fast": 5, "accurate": 3, "best": 3}

CHILD = r"""
import json, resource, sys, tempfile, time, torch
from mnistlab import from_preset, train
preset, overrides, seeds, device, data_dir, compile_ = json.loads(sys.argv[1])
out = []
for i, seed in enumerate([seeds[0]] + seeds):  # the first is the warm-up
    cfg = from_preset(preset, **overrides, seed=seed, device=device, compile=compile_,
                      log_interval=10**9, eval_every=10**9)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = train(cfg, out=d, data_dir=data_dir, progress=False)
        wall = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    out.append(dict(warmup=i == 0, seed=seed, correct=r.test_correct, total=r.test_total,
                    train_s=r.train_seconds, wall_s=wall, gpu_mib=gpu))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(dict(runs=out, rss_mib=rss)))
"""


def run_preset(name, runs, args):
    preset, overrides = PRESETS[name]
    seeds = list(range(1, runs + 1))
    if args.no_cuda_graph:
        overrides = {**overrides, "cuda_graph": False}
    payload = json.dumps([preset, overrides, seeds, args.device, args.data_dir, args.compile])
    proc = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[0][7:])


def training_table(args) -> None:
    print("| preset | runs | test accuracy, mean (median) [range] | correct per seed | training s, median [range] "
          "| warm-up run s | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        res = run_preset(name, args.runs or DEFAULT_RUNS[name], args)
        warm = [r for r in res["runs"] if r["warmup"]][0]
        runs = [r for r in res["runs"] if not r["warmup"]]
        accs = [100 * r["correct"] / r["total"] for r in runs]
        mem = (f"{max(r['gpu_mib'] for r in runs):.0f} MiB GPU" if runs[0]["gpu_mib"] is not None
               else f"{res['rss_mib']:.0f} MiB RSS")
        label = f"{name} (compile {args.compile})" if args.compile else name
        label += " (eager, no CUDA graph)" if args.no_cuda_graph else ""
        print(f"| {label} | {len(runs)} | {sum(accs) / len(accs):.2f} "
              f"({summary(accs)}) | {', '.join(str(r['correct']) for r in runs)} "
              f"| {summary([r['train_s'] for r in runs])} | {warm['train_s']:.2f} | {mem} |", flush=True)


def inference_table(args) -> None:
    import torch

    from mnistlab import PRESETS as P
    from mnistlab import build_model

    device = torch.device(args.device)
    models = {"mlp": ("mlp", {}), "cnn": ("cnn", {}), "bn-cnn (fast preset)": ("bn-cnn", P["fast"]["model_config"]),
              "bn-cnn (accurate preset)": ("bn-cnn", P["accurate"]["model_config"]),
              "deep (best preset)": ("deep", P["best"]["model_config"])}
    print("\n| model | parameters | batch 1: images/s (median latency) | batch 1000: images/s |")
    print("|---|---|---|---|")
    for label, (name, config) in models.items():
        model = build_model(name, **config).eval().to(device)
        cl = getattr(model, "channels_last", False)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        rates = []
        for batch, reps in ((1, 300), (1000, 20)):
            x = torch.randn(batch, 1, 28, 28, device=device)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            times = []
            with torch.inference_mode():
                for i in range(reps + 10):
                    t0 = time.perf_counter()
                    model(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    if i >= 10:
                        times.append(time.perf_counter() - t0)
            times.sort()
            rates.append((batch / times[len(times) // 2], times[len(times) // 2]))
        params = sum(p.numel() for p in model.parameters())
        print(f"| {label} | {params:,} | {rates[0][0]:,.0f} ({1e3 * rates[0][1]:.3f} ms) | {rates[1][0]:,.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--runs", type=int, help="seeded runs per preset (default: 5 for fast, 3 for the others)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", nargs="?", const="default", default="",
                   help="torch.compile mode (the warm-up run pays for compilation)")
    p.add_argument("--no-cuda-graph", action="store_true", help="run the fast preset's step eagerly on a GPU")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-training", action="store_true", help="only the inference table")
    p.add_argument("--no-inference", action="store_true", help="only the training table")
    args = p.parse_args()
    if args.data_dir:
        args.data_dir = str(Path(args.data_dir).resolve())
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/speed.py {' '.join(sys.argv[1:])}\n")
    if not args.no_training:
        training_table(args)
    if not args.no_inference:
        inference_table(args)


if __name__ == "__main__":
    main()
