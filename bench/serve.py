"""The model server under bounded load on 127.0.0.1, against an in-process `Predictor` on the same texts.

At each concurrency c, c clients (coroutines, one keep-alive connection each) send requests of
--texts-per-request texts one after another until --requests requests are answered. The in-process
reference predicts the same texts in batches of c x texts-per-request rows: what a perfect batcher would
hand the model, with no HTTP, JSON or queueing. Prints rows/s, p50 and p99 latency of each and the ratio
server / in-process. Both use --threads onnxruntime threads; the clients share the machine's cores.

Run after `make run` (needs models/export and data/clean/test):

    .venv/bin/python bench/serve.py [--model models/export] [--texts data/clean/test] [--requests 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from textrnn.io import read_folder
from textrnn.predict import Predictor


def start_server(model: Path, log: Path, options: list[str]) -> tuple[subprocess.Popen, int]:
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "textrnn.cli", "serve-model", "--model", str(model),
                                    "--port", "0", *options], stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def load_server(port: int, requests: list[bytes], concurrency: int) -> tuple[float, np.ndarray]:
    """(wall seconds, latency ms per request) for `requests` sent by `concurrency` clients."""
    return asyncio.run(_load(port, requests, concurrency))


async def _load(port: int, requests: list[bytes], concurrency: int) -> tuple[float, np.ndarray]:
    """The clients as coroutines on raw keep-alive connections: a load generator this light leaves the
    cores to the server (http.client's header parsing cost about as much CPU as the server's work)."""
    latencies = np.zeros(len(requests))
    next_request = iter(range(len(requests)))

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in next_request:
            head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(requests[i])}\r\n\r\n").encode()
            start = time.perf_counter()
            writer.write(head + requests[i])
            headers = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", headers).group(1))
            body = await reader.readexactly(length)
            latencies[i] = (time.perf_counter() - start) * 1000
            if not headers.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{headers.splitlines()[0]!r}: {body[:200]!r}")
        writer.close()
        await writer.wait_closed()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def load_in_process(predictor: Predictor, batches: list[list[str]], batch_size: int) -> tuple[float, np.ndarray]:
    latencies = np.zeros(len(batches))
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        begin = time.perf_counter()
        predictor.predict(batch, batch_size)
        latencies[i] = (time.perf_counter() - begin) * 1000
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/export")
    parser.add_argument("--texts", default="data/clean/test", help="folder of Parquet shards with a text column")
    parser.add_argument("--requests", type=int, default=600, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads, server and in-process")
    parser.add_argument("--window-ms", type=float, default=2.0, help="the server's --batch-window-ms")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="rows per onnxruntime call, server (--batch-size) and in-process alike")
    args = parser.parse_args()
    pool = [t for t in read_folder(args.texts, ["text"]).column("text").to_pylist() if t]
    per = args.texts_per_request
    texts = [pool[i % len(pool)] for i in range(args.requests * per)]
    chars = np.array([len(t) for t in pool])
    print(f"{len(pool)} texts (median {np.median(chars):.0f} characters, p90 {np.percentile(chars, 90):.0f}); "
          f"{args.requests} requests of {per} text(s) per level; onnxruntime threads {args.threads}, "
          f"{args.batch_size} rows per call")
    requests = [json.dumps({"texts": texts[i * per:(i + 1) * per]}, ensure_ascii=False).encode()
                for i in range(args.requests)]
    predictor = Predictor(args.model, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        process, port = start_server(Path(args.model), Path(tmp) / "server.log",
                                     ["--threads", str(args.threads), "--batch-window-ms", str(args.window_ms),
                                      "--batch-size", str(args.batch_size)])
        try:
            load_server(port, requests[:50], 4)  # warm-up: first calls, connection set-up
            predictor.predict(texts[:64])
            print("| concurrency | server rows/s | p50 ms | p99 ms | in-process rows/s | p50 ms | p99 ms | ratio |")
            print("|---|---|---|---|---|---|---|---|")
            for c in args.concurrency:
                wall, latency = load_server(port, requests, c)
                batch = c * per
                batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
                ref_wall, ref_latency = load_in_process(predictor, batches, args.batch_size)
                rows = len(texts)
                print(f"| {c} | {rows / wall:,.0f} | {np.percentile(latency, 50):.2f} | "
                      f"{np.percentile(latency, 99):.2f} | {rows / ref_wall:,.0f} | "
                      f"{np.percentile(ref_latency, 50):.2f} | {np.percentile(ref_latency, 99):.2f} | "
                      f"{ref_wall / wall:.2f} |", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


if __name__ == "__main__":
    main()
