"""Atlas benchmarks: the numbers of the README's "The atlas" section.

1. fingerprints/s ingesting models locally and on a Dask ``LocalCluster`` with 1 and 2 worker processes;
2. adding 10 models to an existing index (incremental placement) against rebuilding its whole graph;
3. a bounded loopback load test of the JSON API (requests/s, p50/p99 latency, errors);
4. optionally, with ``--zoo``: index a zoo (all but 10 models, then 10 more), compare what ``index show``
   says of every model with the output of ``ancestree tree --scan`` on the same folder, time ``index rebuild``,
   and take the page's screenshot (``--screenshot``) with Playwright driving Debian's chromium.

Models are written to a temporary folder (random-walk families: a random root, fine-tune-like children
and grandchildren), never committed. Usage::

    python benchmarks/bench_index.py [--families 40] [--per-family 25] [--zoo DIR --keep-db FILE --screenshot docs/atlas.png]
    python benchmarks/bench_index.py --skip ingest incremental --load-db FILE   # load test of an existing index
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from ancestree.index import Atlas


def write_model(folder: Path, tensors: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bench"}))
    return folder


def write_families(out: Path, families: int, per_family: int, side: int, layers: int, seed: int = 0,
                   prefix: str = "f", edges: list[tuple[Path, Path]] | None = None) -> list[Path]:
    """``families`` trees of ``per_family`` models: each child is a random earlier member plus a small step.
    ``edges``, when given, receives the true ``(parent folder, child folder)`` pairs."""
    rng = np.random.default_rng(seed)
    paths = []
    for f in range(families):
        members = [{f"layer.{i}.weight": rng.standard_t(5, (side, side)).astype(np.float32) for i in range(layers)}]
        folders = [write_model(out / f"{prefix}{f:03d}" / "m000", members[0])]
        for m in range(1, per_family):
            k = int(rng.integers(len(members)))
            child = {name: (v + 0.05 * v.std() * rng.standard_normal(v.shape)).astype(np.float32) for name, v in members[k].items()}
            members.append(child)
            folders.append(write_model(out / f"{prefix}{f:03d}" / f"m{m:03d}", child))
            if edges is not None:
                edges.append((folders[k], folders[-1]))
        paths += folders
    return paths


def fresh(db: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


# -- 1. ingestion throughput ----------------------------------------------------------------------------
def bench_ingest(work: Path, n_models: int, side: int) -> list[dict]:
    from distributed import LocalCluster

    zoo = work / "ingest-zoo"
    write_families(zoo, max(1, n_models // 10), 10, side, 4, seed=1)
    rows = []
    with Atlas(fresh(work / "ingest-local.db")) as atlas:
        start = time.perf_counter()
        report = atlas.add(scan=[zoo])
        rows.append({"where": "this process", "models": len(report.added), "seconds": report.ingest_seconds,
                     "total": time.perf_counter() - start})
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            # warm the workers (imports) so the rate is of fingerprinting, not of starting Python
            from distributed import Client

            with Client(cluster.scheduler_address) as c:
                c.run(lambda: __import__("ancestree.index.ingest"))
            with Atlas(fresh(work / f"ingest-dask{workers}.db")) as atlas:
                start = time.perf_counter()
                report = atlas.add(scan=[zoo], dask=cluster.scheduler_address)
                rows.append({"where": f"Dask, {workers} worker(s)", "models": len(report.added),
                             "seconds": report.ingest_seconds, "total": time.perf_counter() - start})
    for r in rows:
        r["per_second"] = r["models"] / r["seconds"]
    return rows


# -- 2. incremental placement vs rebuild ------------------------------------------------------------------
def bench_incremental(work: Path, families: int, per_family: int, side: int) -> dict:
    zoo = work / "atlas-zoo"
    write_families(zoo, families, per_family, side, 3, seed=2)
    extra = work / "extra"
    # 10 new models: fine-tune-like children of 10 existing models of the first two families
    rng = np.random.default_rng(3)
    from safetensors.numpy import load_file

    new = []
    for i in range(10):
        base = load_file(str(zoo / f"f{i % 2:03d}" / f"m{i:03d}" / "model.safetensors"))
        child = {k: (v + 0.05 * v.std() * rng.standard_normal(v.shape)).astype(np.float32) for k, v in base.items()}
        new.append(write_model(extra / f"new{i:02d}", child))
    db = fresh(work / "atlas.db")
    with Atlas(db) as atlas:
        start = time.perf_counter()
        atlas.add(scan=[zoo])
        build = time.perf_counter() - start
        start = time.perf_counter()
        report = atlas.add([(f"new/{p.name}", p) for p in new])
        add10 = time.perf_counter() - start
        placement = report.placement
        n = len(atlas.ls())
        incremental = recovered_edges(atlas)
        start = time.perf_counter()
        atlas.rebuild()
        rebuild = time.perf_counter() - start
        joined = {atlas.model(f"new/{p.name}")["tree"] for p in new}
        rebuilt = recovered_edges(atlas)
    return {"models": n, "build": build, "add10": add10, "add10_ingest": report.ingest_seconds,
            "add10_place": placement.seconds, "re_examined": placement.members, "trees_touched": placement.trees_touched,
            "local": placement.local, "fallbacks": placement.fallbacks,
            "rebuild": rebuild, "speedup": rebuild / add10, "new_trees": len(joined), "db": db,
            **agreement(incremental, rebuilt)}


def recovered_edges(atlas: Atlas) -> dict[tuple[str, str], str]:
    """The index's recovered edges: ``(parent, child) -> relation``."""
    return {(e.parent, e.child): e.relation for e in atlas.edges("recovered")}


def agreement(incremental: dict, rebuilt: dict) -> dict:
    """How the incrementally built graph compares with ``index rebuild``'s, edge for edge."""
    common = set(incremental) & set(rebuilt)
    return {"vs_rebuild_common": len(common), "vs_rebuild_edges": len(rebuilt), "inc_edges": len(incremental),
            "vs_rebuild_same_relation": sum(incremental[e] == rebuilt[e] for e in common)}


def print_agreement(r: dict) -> None:
    print(f"\nincremental vs `index rebuild`: {r['vs_rebuild_common']} of rebuild's {r['vs_rebuild_edges']} edges "
          f"({100 * r['vs_rebuild_common'] / max(1, r['vs_rebuild_edges']):.1f}%; incremental has {r['inc_edges']}), "
          f"same relation on {r['vs_rebuild_same_relation']}; {r['local']} of 10 placed locally, "
          f"fallbacks: {r['fallbacks'] or 'none'}")


# -- 3. load test ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ancestree", "serve", "--db", str(db), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/api/status", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def bench_load(db: Path, requests: int, threads: int) -> dict:
    """``requests`` GETs from ``threads`` client threads on 127.0.0.1: 70% model detail, 20% name search, 10% graph."""
    import httpx

    with Atlas(db, read_only=True) as atlas:
        names = [r["name"] for r in atlas.ls()]
    proc, url = start_server(db)
    rng = random.Random(0)
    paths = []
    for _ in range(requests):
        x = rng.random()
        if x < 0.7:
            paths.append(("/api/model", {"id": rng.choice(names)}))
        elif x < 0.9:
            paths.append(("/api/search", {"q": rng.choice(names)[: rng.randint(2, 8)]}))
        else:
            paths.append(("/api/graph", {}))
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    chunks = [paths[i::threads] for i in range(threads)]

    def worker(chunk: list) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for path, params in chunk:
                t = time.perf_counter()
                r = client.get(path, params=params)
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {path}")

    try:
        start = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(c,)) for c in chunks]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(10)
    lat = sorted(latencies)
    return {"requests": len(lat), "threads": threads, "seconds": wall, "per_second": len(lat) / wall,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "errors": len(errors), "models": len(names)}


# -- 4. a zoo: agreement with `ancestree tree`, screenshot ------------------------------------------------------
def bench_zoo(zoo: Path, work: Path, keep_db: Path | None) -> dict:
    """Index ``zoo`` (all but 10 models, then the last 10 incrementally) and compare the index with ``tree``."""
    from ancestree.io import scan_models

    items = sorted((name, str(path)) for name, path in scan_models(zoo))  # named as `tree --scan` names them
    db = fresh(keep_db or work / "zoo.db")
    with Atlas(db) as atlas:
        start = time.perf_counter()
        atlas.add(items[: len(items) - 10])
        build = time.perf_counter() - start
        start = time.perf_counter()
        report = atlas.add(items[len(items) - 10:])
        add10 = time.perf_counter() - start
        # what `index show MODEL` prints, for every model: its recovered parents and relations
        shown = {r["name"]: atlas.show(r["name"]) for r in atlas.ls()}
        index_trees = {r["name"]: r["tree"] for r in atlas.ls()}
    # recovered edges, also those a card agrees with (``declared+recovered``; counting ``recovered`` alone left
    # those out and compared 74 of the index's 166 edges)
    ours = {(e["parent"], name): e["relation"] for name, s in shown.items() for e in s["parents"]
            if "recovered" in e["source"].split("+")}
    # `ancestree tree` itself (a separate process, fingerprints computed afresh) on the same models
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ancestree", "tree", "--scan", str(zoo), "--format", "json", "--no-cache"],
                          capture_output=True, text=True, check=True)
    tree_seconds = time.perf_counter() - start
    tree = json.loads(proc.stdout)
    theirs = {(e["parent"], e["child"]): e["relation"] for e in tree["edges"]}
    common = set(ours) & set(theirs)
    tree_of = {m["id"]: m["tree"] for m in tree["models"]}
    models = sorted(set(shown) & set(tree_of))
    same_parents = sum({(p, r) for (p, c), r in ours.items() if c == m} == {(p, r) for (p, c), r in theirs.items() if c == m}
                       for m in models)
    # rebuild on a copy, so the kept index is the incrementally built one
    copy = work / "rebuild.db"
    shutil.copy(db, fresh(copy))
    with Atlas(copy) as atlas:
        incremental = recovered_edges(atlas)
        start = time.perf_counter()
        atlas.rebuild()
        rebuild = time.perf_counter() - start
        rebuilt = recovered_edges(atlas)
    return {"models": len(items), "indexed": len(shown), "tree_models": len(tree_of), "build": build, "add10": add10,
            "add10_place": report.placement.seconds, "add10_ingest": report.ingest_seconds,
            "re_examined": report.placement.members, "trees_touched": report.placement.trees_touched,
            "rebuild": rebuild, "tree_seconds": tree_seconds,
            "index_edges": len(ours), "tree_edges": len(theirs), "common_edges": len(common),
            "same_relation": sum(ours[e] == theirs[e] for e in common),
            "models_same_parents": same_parents, "compared_models": len(models),
            "same_partition": _partition(index_trees, models) == _partition(tree_of, models),
            "truth": _truth_scores(zoo, ours, theirs), "db": db,
            "local": report.placement.local, "fallbacks": report.placement.fallbacks, **agreement(incremental, rebuilt)}


def _partition(tree_of: dict[str, object], models: list[str]) -> list[list[str]]:
    groups: dict[object, list[str]] = {}
    for m in models:
        groups.setdefault(tree_of[m], []).append(m)
    return sorted(groups.values())


def _truth_scores(zoo: Path, ours: dict, theirs: dict) -> dict | None:
    """Share of the zoo's true edges (parent, child) each of them recovered, when the zoo has a truth.json."""
    truth_file = zoo / "truth.json"
    if not truth_file.is_file():
        return None
    truth = {(e["parent"], e["child"]) for e in json.loads(truth_file.read_text())["edges"]}
    return {"true_edges": len(truth), "index_found": len(truth & set(ours)), "tree_found": len(truth & set(theirs))}


def take_screenshot(db: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    proc, url = start_server(db)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            page = browser.new_page(viewport={"width": 1200, "height": 640})
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='1']")
            with Atlas(db, read_only=True) as atlas:
                deepest = max((r["name"] for r in atlas.ls()), key=lambda n: len(atlas.store.lineage(n)))
            page.click(f"circle.node[data-id='{deepest}']")
            page.wait_for_selector("#model-name")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), type="png")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", type=int, default=40)
    ap.add_argument("--per-family", type=int, default=25)
    ap.add_argument("--side", type=int, default=96, help="matrix side of the atlas models")
    ap.add_argument("--ingest-models", type=int, default=60)
    ap.add_argument("--ingest-side", type=int, default=512, help="matrix side of the ingestion models (4 matrices)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--zoo", type=Path, default=None)
    ap.add_argument("--screenshot", type=Path, default=None, help="with --zoo: a PNG of the page over its index")
    ap.add_argument("--keep-db", type=Path, default=None, help="with --zoo: keep its index in this file")
    ap.add_argument("--skip", nargs="*", default=[], choices=["ingest", "incremental", "load"])
    ap.add_argument("--load-db", type=Path, default=None, help="run the load test on this index (default: the incremental one)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        if "ingest" not in args.skip:
            rows = bench_ingest(work, args.ingest_models, args.ingest_side)
            print(f"\n### Ingestion ({rows[0]['models']} models of 4 × {args.ingest_side}² float32)\n")
            print("| where | models | seconds | fingerprints/s |\n|---|---:|---:|---:|")
            for r in rows:
                print(f"| {r['where']} | {r['models']} | {r['seconds']:.2f} | {r['per_second']:.1f} |")
        db = None
        if "incremental" not in args.skip:
            r = bench_incremental(work, args.families, args.per_family, args.side)
            db = r["db"]
            print(f"\n### Incremental placement ({r['models']} models in {args.families} trees)\n")
            print("| step | seconds |\n|---|---:|")
            print(f"| index add of the first {r['models'] - 10} models | {r['build']:.2f} |")
            print(f"| index add of 10 more (ingest {r['add10_ingest']:.2f} s + place {r['add10_place']:.2f} s; "
                  f"{r['re_examined']} models in {r['trees_touched']} trees re-examined) | {r['add10']:.2f} |")
            print(f"| index rebuild (whole graph from stored fingerprints) | {r['rebuild']:.2f} |")
            print(f"\nrebuild / add of 10: {r['speedup']:.1f}× (placement alone: {r['rebuild'] / r['add10_place']:.1f}×)")
            print_agreement(r)
        db = args.load_db or db
        if "load" not in args.skip and db is not None:
            r = bench_load(db, args.requests, args.threads)
            print(f"\n### Load test (loopback, {r['models']} models, {r['threads']} client threads)\n")
            print("| requests | seconds | requests/s | p50 ms | p99 ms | errors |\n|---:|---:|---:|---:|---:|---:|")
            print(f"| {r['requests']} | {r['seconds']:.2f} | {r['per_second']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
        if args.zoo is not None:
            r = bench_zoo(args.zoo, work, args.keep_db)
            print(f"\n### Zoo {args.zoo} ({r['models']} models, {r['indexed']} indexed, `tree` recovered {r['tree_models']})\n")
            print("| step | seconds |\n|---|---:|")
            print(f"| index add of the first {r['models'] - 10} models | {r['build']:.2f} |")
            print(f"| index add of the last 10 (ingest {r['add10_ingest']:.2f} s + place {r['add10_place']:.2f} s; "
                  f"{r['re_examined']} models in {r['trees_touched']} trees re-examined) | {r['add10']:.2f} |")
            print(f"| index rebuild (whole graph from stored fingerprints) | {r['rebuild']:.2f} |")
            print(f"| `ancestree tree --scan` (fingerprints afresh + recovery) | {r['tree_seconds']:.2f} |")
            print(f"\n`index rebuild` / add of 10: {r['rebuild'] / r['add10']:.1f}× (placement alone: "
                  f"{r['rebuild'] / r['add10_place']:.1f}×); `tree` on all models / add of 10: {r['tree_seconds'] / r['add10']:.1f}×")
            print_agreement(r)
            print(f"\nindex vs tree: {r['common_edges']} of {r['tree_edges']} tree edges in the index "
                  f"({100 * r['common_edges'] / max(1, r['tree_edges']):.1f}%), index has {r['index_edges']}; "
                  f"same relation on {r['same_relation']} of {r['common_edges']} "
                  f"({100 * r['same_relation'] / max(1, r['common_edges']):.1f}%); "
                  f"{r['models_same_parents']} of {r['compared_models']} models have identical parents+relations "
                  f"({100 * r['models_same_parents'] / max(1, r['compared_models']):.1f}%); "
                  f"same tree partition: {r['same_partition']}")
            if r["truth"]:
                t = r["truth"]
                print(f"against truth.json: index found {t['index_found']}/{t['true_edges']} true edges, "
                      f"tree {t['tree_found']}/{t['true_edges']}")
            if args.screenshot is not None:
                take_screenshot(r["db"], args.screenshot)
                print(f"\nscreenshot: {args.screenshot}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
