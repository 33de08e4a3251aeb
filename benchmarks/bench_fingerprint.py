"""Fingerprinting speed and memory against a plain sequential read of the same bytes.

Generates transformer-like safetensors models (default ~100 MB and ~500 MB; ``--full`` adds ~2 GB) in a
temporary folder, then for each one, in the same run:

* drops the file from the page cache (``posix_fadvise(DONTNEED)`` after ``fsync``; checked by timing),
* times a plain sequential read of the file (16 MB ``readinto``), drops the cache again,
* fingerprints it in a fresh subprocess (no fingerprint cache) and times ``fingerprint()`` alone,
* repeats the two (cold each time) ``--repeats`` times, 3 by default, and reports medians, with the range of
  the per-trial ratios (single trials on a shared disk vary by ±30 %),
* reports the fingerprint's CPU time too (GB per CPU-second, all threads): on a shared machine the wall
  clock mostly measures the other processes,
* measures peak memory in another subprocess: ``tracemalloc`` peak of Python/numpy allocations, and the
  peak anonymous RSS sampled every 5 ms (file pages of the memory map are page cache, not counted).

Prints a markdown table. Usage: ``python benchmarks/bench_fingerprint.py [--sizes 100 500] [--full]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

D = 1024  # hidden size: q/k/v/o are D×D (4 MB), up/down D×4D (16 MB, the largest tensors)


def layer(rng: np.random.Generator, i: int) -> dict[str, np.ndarray]:
    t: dict[str, np.ndarray] = {}
    for name, shape in (("q", (D, D)), ("k", (D, D)), ("v", (D, D)), ("o", (D, D)), ("up", (4 * D, D)), ("down", (D, 4 * D))):
        t[f"layers.{i}.{name}.weight"] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        t[f"layers.{i}.{name}.bias"] = rng.standard_normal(shape[0], dtype=np.float32) * np.float32(0.01)
    t[f"layers.{i}.norm.weight"] = np.ones(D, np.float32)
    return t


def make_model(path: Path, megabytes: int, seed: int = 0) -> dict[str, float]:
    """Write a float32 safetensors model of about ``megabytes`` MB, one layer at a time."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    per_layer = sum(v.nbytes for v in layer(np.random.default_rng(0), 0).values())
    n_layers = max(1, round(megabytes * 1e6 / per_layer))
    tensors: dict[str, np.ndarray] = {}
    for i in range(n_layers):
        tensors.update(layer(rng, i))
    save_file(tensors, str(path))
    largest = max(v.nbytes for v in tensors.values())
    del tensors
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return {"layers": n_layers, "tensors": n_layers * 13, "largest": largest}


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def plain_read(path: Path) -> float:
    """Seconds to read the whole file sequentially into a reused 16 MB buffer."""
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(view):
            pass
    return time.perf_counter() - start


def warm_up_process(folder: Path) -> None:
    """Fingerprint a tiny model first: numba kernels, the reader module and the thread pools are set up once
    per process, as in any long run (``index add`` of many models), so they are not this model's cost."""
    from safetensors.numpy import save_file

    from ancestree.fingerprint import fingerprint
    from ancestree.fingerprint.stats import warm_up

    warm_up()
    tiny = folder / "warm-up.safetensors"
    save_file({"w": np.ones((8, 8), np.float32)}, str(tiny))
    fingerprint(tiny)
    tiny.unlink()


def worker_time(path: str) -> None:
    from ancestree.fingerprint import fingerprint, to_bytes

    warm_up_process(Path(path).parent)
    start, cpu = time.perf_counter(), time.process_time()
    fp = fingerprint(path)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "fingerprint_bytes": len(to_bytes([fp])), "tensors": len(fp)}))


def worker_memory(path: str) -> None:
    import tracemalloc

    from ancestree.fingerprint import fingerprint

    warm_up_process(Path(path).parent)

    def anon_kb() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    base = anon_kb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anon_kb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    fingerprint(path)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    done.set()
    sampler.join()
    print(json.dumps({"traced_peak": traced, "anon_peak": (peak[0] - base) * 1024}))


def run_worker(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(size_mb: int, folder: Path, repeats: int = 3) -> dict[str, float]:
    """Plain read and fingerprint of one model, alternated ``repeats`` times from a cold page cache; the
    medians are reported (single trials on this shared disk vary by ±30 %), with the range of the ratios."""
    path = folder / f"model-{size_mb}mb.safetensors"
    info = make_model(path, size_mb)
    nbytes = path.stat().st_size
    drop_cache(path)
    first_cold = plain_read(path)
    warm = plain_read(path)
    colds, runs = [], []
    for _ in range(repeats):
        drop_cache(path)
        colds.append(plain_read(path))
        drop_cache(path)
        runs.append(run_worker("time", path))
    memory = run_worker("memory", path)
    path.unlink()
    ratios = sorted(c / r["seconds"] for c, r in zip(colds, runs))
    return {
        "size": nbytes,
        "tensors": info["tensors"],
        "largest": info["largest"],
        "read_cold": nbytes / float(np.median(colds)),
        "read_warm": nbytes / warm,
        "cache_dropped": first_cold > 1.5 * warm,
        "fingerprint": nbytes / float(np.median([r["seconds"] for r in runs])),
        "fingerprint_cpu": nbytes / float(np.median([r["cpu_seconds"] for r in runs])),
        "ratio_range": (ratios[0], ratios[-1]),
        "traced_peak": memory["traced_peak"],
        "anon_peak": memory["anon_peak"],
        "fp_bytes": runs[0]["fingerprint_bytes"],
    }


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| model | tensors | largest tensor | plain read | fingerprint | ratio (trials) | per CPU-second | peak heap (tracemalloc) | peak anon RSS | ÷ largest | fingerprint file |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        read_note = "" if r["cache_dropped"] else " (warm!)"
        lines.append(
            f"| {r['size'] / 1e6:,.0f} MB | {r['tensors']} | {r['largest'] / 1e6:.1f} MB "
            f"| {r['read_cold'] / 1e9:.2f} GB/s{read_note} | {r['fingerprint'] / 1e9:.2f} GB/s | {r['fingerprint'] / r['read_cold']:.2f} ({r['ratio_range'][0]:.2f}–{r['ratio_range'][1]:.2f}) | {r['fingerprint_cpu'] / 1e9:.2f} GB "
            f"| {r['traced_peak'] / 1e6:.1f} MB | {r['anon_peak'] / 1e6:.1f} MB | {max(r['traced_peak'], r['anon_peak']) / r['largest']:.2f}× "
            f"| {r['fp_bytes'] / 1e3:.0f} KB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500], help="model sizes in MB")
    parser.add_argument("--full", action="store_true", help="also a ~2 GB model")
    parser.add_argument("--dir", default=None, help="where to write the temporary models (default: system temp)")
    parser.add_argument("--repeats", type=int, default=3, help="cold read / fingerprint trials per model (medians reported)")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, path = args.worker
        (worker_time if kind == "time" else worker_memory)(path)
        return
    sizes = list(args.sizes) + ([2000] if args.full else [])
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ancestree-bench-") as tmp:
        rows = [bench(size, Path(tmp), max(1, args.repeats)) for size in sizes]
    print(table(rows))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{os.cpu_count()} CPU(s), load average {load} at the end; plain read = sequential 16 MB readinto after posix_fadvise(DONTNEED).")


if __name__ == "__main__":
    main()
