"""Prediction latency: in process (preprocessing included) and over HTTP with concurrent clients.

    python benchmarks/serving.py CHECKPOINT [--data-dir DIR] [--clients 16] [--requests 5000]

The image is a 280x280 PNG of a test digit, dark ink on white, as the drawing page sends it.
In-process: median and p99 of Classifier.predict(png bytes) over 1,000 calls. HTTP: the server
is `mnistlab serve` in its own process; the load comes from a minimal asyncio client on the
same machine (raw keep-alive HTTP/1.1, one connection per client), which shares its 2 cores.
"""

import argparse
import asyncio
import gc
import io
import socket
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from common import machine
from mnistlab import load_split
from mnistlab.inference import load_model


def digit_png(data_dir) -> bytes:
    images, _ = load_split("mnist", "test", data_dir=data_dir)
    img = Image.fromarray(255 - images[0].numpy()).resize((280, 280), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def in_process(checkpoint, png: bytes, n: int = 1000) -> tuple[float, float]:
    predictor = load_model(checkpoint)
    import torch

    torch.set_num_threads(1)
    times = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        predictor.predict(png)
        if i >= 50:
            times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def raw_png_request(png: bytes, port: int) -> bytes:
    """The request the drawing page sends: the PNG's bytes with Content-Type image/png."""
    head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(png)}\r\n\r\n").encode()
    return head + png


async def client(port, request, count, latencies, errors):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        t0 = time.perf_counter()
        writer.write(request)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        if b" 200 " not in status:
            errors.append(status)
    writer.close()


async def load(port, request, clients, total):
    latencies, errors = [], []
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, request, total // clients, latencies, errors) for _ in range(clients)))
    return latencies, errors, time.perf_counter() - t0


def _event_loop_runner():
    """uvloop where installed (mnistlab[serve] brings it): the load generator should cost little CPU."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--data-dir")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=5008)
    p.add_argument("--workers", type=int, default=2, help="server processes (default: 2, one per core here)")
    args = p.parse_args()
    png = digit_png(args.data_dir)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/serving.py {' '.join(sys.argv[1:])}\n")
    p50, p99 = in_process(args.checkpoint, png)
    print(f"in process, Classifier.predict(280x280 PNG): p50 {1e3 * p50:.2f} ms, p99 {1e3 * p99:.2f} ms")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", args.checkpoint, "--port", str(port),
                               "--workers", str(args.workers)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "serving ..." once the model is loaded
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        request = raw_png_request(png, port)
        run = _event_loop_runner()
        run(load(port, request, args.clients, 320))  # warm-up
        gc.disable()  # the load generator's own garbage collections would show up as server latency
        lat, errors, wall = run(load(port, request, args.clients, args.requests))
        gc.enable()
    finally:
        server.terminate()
        server.wait()
    ms = np.array(lat) * 1e3
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    print(f"HTTP, {args.workers} server process(es), {args.clients} concurrent clients, "
          f"{len(lat)} requests in {wall:.1f} s "
          f"({len(lat) / wall:.0f} requests/s): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"max {ms.max():.1f} ms, errors {len(errors)}")


if __name__ == "__main__":
    main()
