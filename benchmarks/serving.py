"""Serving figures: latency in process and over HTTP, 1 and 2 worker processes, under attack.

    python benchmarks/serving.py CHECKPOINT [--data-dir DIR] [--clients 16] [--requests 5008]
                                 [--servers mnistlab-1 mnistlab-2 uvicorn-2] [--attack-seconds 20]

The image is a 280x280 PNG of a test digit, dark ink on white, as the drawing page sends it.
For each server (`mnistlab serve --workers N`, or uvicorn's own multi-process supervisor with
one shared socket, `uvicorn --workers 2`, around the same app): the median of 200 sequential
GET /healthz on one keep-alive connection; then `--clients` keep-alive clients each posting the
PNG, throughput and latency. Then the attack, on `mnistlab serve`: 4 clients keep uploading the
costliest image that still passes the checks (4096x4096 RGBA PNG) while one client asks for
/healthz every 20 ms; its p50/p99 and the peak resident memory of the server's processes.
The load comes from a minimal asyncio client (raw HTTP/1.1) on the same 2 cores.
"""

import argparse
import asyncio
import gc
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import machine
from mnistlab import load_split
from mnistlab.inference import load_model

HERE = Path(__file__).resolve().parent


def digit_png(data_dir) -> bytes:
    images, _ = load_split("mnist", "test", data_dir=data_dir)
    img = Image.fromarray(255 - images[0].numpy()).resize((280, 280), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def worst_png() -> bytes:
    """The largest image the checks let through (4096x4096 pixels, RGBA), compressed to a small upload."""
    a = np.full((4096, 4096, 4), 255, np.uint8)
    a[800:3300, 1900:2200, :3] = 0
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def in_process(checkpoint, png: bytes, n: int = 1000) -> tuple[float, float]:
    model = load_model(checkpoint)
    import torch

    torch.set_num_threads(1)
    times = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        model.predict(png)
        if i >= 50:
            times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def post(body: bytes, port: int, path: str = "/api/predict") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def get(port: int, path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def exchange(reader, writer, request: bytes) -> bytes:
    writer.write(request)
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def client(port, request, count, latencies, errors, pause=0.0, until=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    while (until is None and done < count) or (until is not None and time.perf_counter() < until):
        t0 = time.perf_counter()
        status = await exchange(reader, writer, request)
        latencies.append(time.perf_counter() - t0)
        if b" 200 " not in status:
            errors.append(status)
        done += 1
        if pause:
            await asyncio.sleep(pause)
    writer.close()


async def load(port, request, clients, total):
    latencies, errors = [], []
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, request, total // clients, latencies, errors) for _ in range(clients)))
    return latencies, errors, time.perf_counter() - t0


async def attack(port, bomb: bytes, seconds: float):
    until = time.perf_counter() + seconds
    health, uploads, errors = [], [], []
    await asyncio.gather(client(port, get(port), 0, health, errors, pause=0.02, until=until),
                         *(client(port, post(bomb, port), 0, uploads, errors, until=until) for _ in range(4)))
    return health, uploads, errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, checkpoint: str, port: int) -> subprocess.Popen:
    if kind.startswith("mnistlab"):
        cmd = [sys.executable, "-m", "mnistlab", "serve", checkpoint, "--port", str(port),
               "--workers", kind.split("-")[1]]
    else:  # uvicorn's own supervisor: one shared listening socket, around the same app
        cmd = [sys.executable, "-m", "uvicorn", "uvicorn_app:app", "--factory", "--app-dir", str(HERE),
               "--workers", kind.split("-")[1], "--port", str(port), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MNISTLAB_CHECKPOINT": checkpoint, "MNISTLAB_OFFLINE": "1"})
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(get(port))
                if s.recv(20).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            time.sleep(0.1)
    time.sleep(1.0)  # every worker is up, not just the first
    return proc


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children, summed."""
    pids = [pid] + [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == pid]
    total = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM")))
    return total / 1024


def _parent(proc_dir: Path) -> int:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--data-dir")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=5008)
    p.add_argument("--servers", nargs="+", default=["mnistlab-1", "mnistlab-2", "uvicorn-2"])
    p.add_argument("--attack-seconds", type=float, default=20)
    args = p.parse_args()
    png, bomb = digit_png(args.data_dir), worst_png()
    run = asyncio.run
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/serving.py {' '.join(sys.argv[1:])}\n")
    p50, p99 = in_process(args.checkpoint, png)
    print(f"in process, Classifier.predict(280x280 PNG): p50 {1e3 * p50:.2f} ms, p99 {1e3 * p99:.2f} ms\n")
    print(f"| server | keep-alive GET /healthz, median of 200 | {args.clients} clients posting the PNG: requests/s "
          "| p50 | p99 | errors |\n|---|---|---|---|---|---|")
    for kind in args.servers:
        port = free_port()
        server = start(kind, args.checkpoint, port)
        try:
            health, _, _ = run(load(port, get(port), 1, 200))
            run(load(port, post(png, port), args.clients, 320))  # warm-up
            gc.disable()  # the load generator's own collections would show up as server latency
            lat, errors, wall = run(load(port, post(png, port), args.clients, args.requests))
            gc.enable()
        finally:
            server.terminate()
            server.communicate(timeout=30)
        ms = np.array(lat) * 1e3
        print(f"| {kind} | {1e3 * np.median(health):.2f} ms | {len(lat) / wall:.0f} | {np.percentile(ms, 50):.1f} ms "
              f"| {np.percentile(ms, 99):.1f} ms | {len(errors)} |", flush=True)
    for workers in ("1", "2"):
        port = free_port()
        server = start(f"mnistlab-{workers}", args.checkpoint, port)
        try:
            idle = peak_rss_mib(server.pid)
            health, uploads, errors = run(attack(port, bomb, args.attack_seconds))
            peak = peak_rss_mib(server.pid)
        finally:
            server.terminate()
            server.communicate(timeout=30)
        ms = np.array(health) * 1e3
        print(f"\nattack on mnistlab serve --workers {workers}: 4 clients uploading a {len(bomb) // 1024} KiB "
              f"4096x4096 RGBA PNG ({len(uploads)} uploads in {args.attack_seconds:.0f} s, "
              f"median {1e3 * np.median(uploads):.0f} ms each), /healthz every 20 ms: p50 {np.percentile(ms, 50):.1f} "
              f"ms, p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms; non-200 answers {len(errors)}; "
              f"peak RSS of the server's processes {peak:.0f} MiB (after start-up {idle:.0f} MiB)", flush=True)


if __name__ == "__main__":
    main()
