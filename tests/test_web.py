"""The atlas server: its JSON API (read-only, refuses what is not indexed, 4xx on bad parameters) and its page
driven in headless Chromium against a server started by the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ancestree.errors import BadInputError
from ancestree.index import Atlas
from ancestree.web import create_app
from conftest import chromium_page


@pytest.fixture(scope="module")
def client(tiny_atlas: Path) -> TestClient:
    return TestClient(create_app(tiny_atlas))


def a_child_with_parent(db: Path) -> tuple[str, str]:
    with Atlas(db, read_only=True) as atlas:
        edge = next(e for e in atlas.edges("recovered") if e.relation == "finetune")
    return edge.child, edge.parent


def n_models(db: Path) -> int:
    with Atlas(db, read_only=True) as atlas:
        return len(atlas.ls())


def test_api_models_graph_detail(client: TestClient, tiny_atlas: Path) -> None:
    n = n_models(tiny_atlas)
    status = client.get("/api/status").json()
    assert status["models"] == n > 20 and status["experts"] is False
    graph = client.get("/api/graph").json()
    assert len(graph["models"]) == n and graph["edges"] and {"parent", "child", "relation", "confidence"} <= set(graph["edges"][0])
    assert all(m["label"] == m["id"] for m in graph["models"])  # short ids are their own labels (the page draws them)
    page = client.get("/api/models", params={"limit": 5, "offset": 5}).json()
    assert page["total"] == n and len(page["models"]) == 5
    child, parent = a_child_with_parent(tiny_atlas)
    detail = client.get("/api/model", params={"id": child}).json()
    assert parent in [e["parent"] for e in detail["parents"]] and detail["lineage"][0] == child and len(detail["lineage"]) >= 2
    found = client.get("/api/search", params={"q": child}).json()["results"]
    assert found[0]["id"] == child
    schema = client.get("/openapi.json").json()
    assert {"/api/models", "/api/model", "/api/graph", "/api/search", "/api/text-search"} <= set(schema["paths"])
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert "atlas.js" in client.get("/").text and client.get("/static/atlas.js").status_code == 200


def test_api_refuses_and_validates(client: TestClient, tiny_atlas: Path) -> None:
    for outside in ("/etc/passwd", str(tiny_atlas), "../m0001"):
        r = client.get("/api/model", params={"id": outside})
        assert r.status_code == 404 and "no model" in r.json()["detail"]
    assert client.get("/static/..%2F..%2Findex%2Fstore.py").status_code == 404
    for path, params in (("/api/models", {"limit": 0}), ("/api/models", {"limit": "many"}), ("/api/graph", {"edges": "x"}),
                         ("/api/search", {}), ("/api/model", {}), ("/api/models", {"tree": -1}),
                         ("/api/models", {"tree": 2**63}), ("/api/models", {"offset": 2**63})):  # SQLite's limit: was a 500
        r = client.get(path, params=params)
        assert 400 <= r.status_code < 500 and r.json()["detail"], (path, params)
    r = client.get("/api/text-search", params={"q": "red triangles"})
    assert r.status_code == 503 and "no experts loaded" in r.json()["detail"]
    # read-only: nothing but GET is routed, and the file is opened without the right to write
    assert client.post("/api/model", params={"id": "m0001"}).status_code == 405
    assert client.delete("/api/models").status_code == 405


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_atlas: Path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ancestree", "serve", "--db", str(tiny_atlas), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/status", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()}")
    yield url
    proc.terminate()
    proc.wait(10)


def test_serve_on_port_0_prints_the_address_it_serves(tiny_atlas: Path) -> None:
    """`--port 0` was accepted, and the server printed http://127.0.0.1:0/, never the port it listened on."""
    import re

    proc = subprocess.Popen([sys.executable, "-m", "ancestree", "serve", "--db", str(tiny_atlas), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found and int(found.group(1)) > 0, line
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"{found.group(0)}api/status", timeout=1).status_code == 200
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_page_in_headless_chromium(server: str, tiny_atlas: Path) -> None:
    import re

    from playwright.sync_api import expect

    child, parent = a_child_with_parent(tiny_atlas)
    with chromium_page() as (page, errors):
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=15000)
        # the graph is drawn: one circle per model, one line per recovered edge
        assert page.locator("circle.node").count() == n_models(tiny_atlas)
        assert page.locator("line.edge").count() == len(Atlas(tiny_atlas, read_only=True).edges("recovered"))
        # name search finds the model and selecting it shows its parent and the lineage path
        page.fill("#search", child)
        page.press("#search", "Enter")
        page.locator("#result-list a.model", has_text=re.compile(f"^{re.escape(child)}$")).first.click()
        # (expect retries until the asynchronous fetch has been rendered, so a slow server is no failure)
        expect(page.locator("#model-name")).to_have_text(child)
        expect(page.locator("#parents")).to_contain_text(parent)
        expect(page.locator("#lineage")).to_have_text(re.compile(f"^{re.escape(child)} ←"))
        # clicking the parent's node shows the parent, with the child among its children
        page.click(f"circle.node[data-id='{parent}']")
        expect(page.locator("#model-name")).to_have_text(parent)
        expect(page.locator("#children")).to_contain_text(child)
        # a slow search answer must not undo a later click: delay /api/search, search the child (a single
        # match, which the page opens), click the parent before the answer lands, and the parent stays
        page.evaluate("""() => { const f = window.fetch; window.fetch = (u, ...a) => String(u).includes('/api/search')
            ? new Promise((r) => setTimeout(r, 800)).then(() => f(u, ...a)) : f(u, ...a); }""")
        page.fill("#search", child)
        page.press("#search", "Enter")
        page.click(f"circle.node[data-id='{parent}']")
        page.wait_for_timeout(1500)
        expect(page.locator("#model-name")).to_have_text(parent)
        # colour by relation, zoom and pan change the drawing without errors
        before = page.get_attribute(f"circle.node[data-id='{child}']", "fill")
        page.select_option("#colour", "relation")
        assert page.get_attribute(f"circle.node[data-id='{child}']", "fill") != before
        page.mouse.move(500, 400)
        page.mouse.wheel(0, -300)
        assert "scale(" in (page.get_attribute("#viewport", "transform") or "")
        # no experts configured: the text search box is not shown
        assert not page.is_visible("#text")
    assert errors == []


def test_page_layout_keeps_the_page_shape_for_thousands_of_models(server: str) -> None:
    """An atlas of 300 trees, or one base with 3 000 fine-tunes, is laid out about as wide as asked (1.5 here,
    the page passes its own shape), every model at a place of its own: not a column of rows of trees, or a
    line of siblings, a few pixels wide once the page fits it."""
    with chromium_page() as (page, errors):
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=15000)
        shapes = page.evaluate("""() => {
            const forest = { models: [], edges: [] }, fan = { models: [{ id: "base", tree: 0 }], edges: [] };
            for (let t = 0; t < 300; t++) for (let i = 0; i < 20; i++) {
                forest.models.push({ id: `t${t}/m${i}`, tree: t });
                if (i) forest.edges.push({ parent: `t${t}/m${Math.floor((i - 1) / 2)}`, child: `t${t}/m${i}`, relation: "finetune" });
            }
            for (let i = 0; i < 3000; i++) {
                fan.models.push({ id: `ft${i}`, tree: 0 });
                fan.edges.push({ parent: "base", child: `ft${i}`, relation: "finetune" });
            }
            const shape = (graph) => {
                const at = [...layout(graph, 1.5).values()], xs = at.map((p) => p.x), ys = at.map((p) => p.y);
                return { placed: at.length, distinct: new Set(at.map((p) => `${p.x},${p.y}`)).size,
                         aspect: (Math.max(...xs) - Math.min(...xs) + 70) / (Math.max(...ys) - Math.min(...ys) + 90) };
            };
            return [shape(forest), shape(fan)];
        }""")
    for shape, n in zip(shapes, (6000, 3001)):
        assert shape["placed"] == shape["distinct"] == n
        assert 0.5 < shape["aspect"] < 3.0, shape
    assert errors == []


# -- text search backed by ProbeX experts ------------------------------------------------------------------
@pytest.fixture(scope="module")
def experts_atlas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, list[str]]]:
    """Two really trained MLP trees (a root and 12 fine-tunes on 4 of 8 named classes each), their ProbeX
    experts (fitted on 8 fine-tunes of each tree; 4 are held out) and an index of all of them:
    (index, experts folder, classes of each model)."""
    import json

    import numpy as np
    import torch

    from ancestree.probex import ProbeXExperts
    from ancestree.probex.model import OURS, with_overrides
    from ancestree.zoo.architectures import make_config
    from ancestree.zoo.data import class_names
    from ancestree.zoo.recipes import TrainSpec, finetune, pretrain
    from ancestree.zoo.save import write_json, write_safetensors

    torch.manual_seed(0)
    torch.set_num_threads(1)
    zoo = tmp_path_factory.mktemp("px-zoo")
    config = make_config("ancestree-mlp", 8, hidden_size=32, num_layers=2)
    vocab = class_names("shapes", 8)
    rng = np.random.default_rng(0)
    classes: dict[str, list[str]] = {}

    def save(name: str, state: dict) -> None:
        (zoo / name).mkdir(parents=True)
        write_safetensors(zoo / name, state)
        write_json(zoo / name / "config.json", config)

    for t in range(2):
        root, _ = pretrain(config, "shapes", TrainSpec(steps=60, lr=0.05, n_per_class=10), seed=11 + t)
        save(f"t{t}/root", root)
        classes[f"t{t}/root"] = list(vocab)
        for i in range(FINE_TUNES):
            chosen = sorted(rng.choice(vocab, size=4, replace=False).tolist())
            _, states, _ = finetune(config, root, "shapes", chosen, TrainSpec(steps=30, lr=0.03, n_per_class=10), seed=100 * t + i)
            save(f"t{t}/ft{i}", states[-1])
            classes[f"t{t}/ft{i}"] = chosen
    models = [{"id": m, "tree": int(m[1]), "classes": c, "split": "root" if m.endswith("root") else "test" if held_out(m) else "train"}
              for m, c in classes.items()]
    (zoo / "truth.json").write_text(json.dumps({"models": models, "edges": []}))
    experts = tmp_path_factory.mktemp("px-experts")
    ProbeXExperts(with_overrides(OURS, epochs=40, r_u=16, r_v=16, r_t=32), sweep_epochs=10, progress=False).fit(zoo).save(experts)
    db = tmp_path_factory.mktemp("px-atlas") / "px.db"
    with Atlas(db) as atlas:
        atlas.add(scan=[zoo])
    return db, experts, classes


#: Fine-tunes per tree of the text-search zoo; the last ``HELD_OUT`` of each are never seen by the experts.
FINE_TUNES, HELD_OUT = 12, 4


def held_out(model: str) -> bool:
    return "/ft" in model and int(model.rsplit("/ft", 1)[1]) >= FINE_TUNES - HELD_OUT


@pytest.mark.slow
def test_text_search_with_probex_experts(experts_atlas: tuple[Path, Path, dict[str, list[str]]]) -> None:
    db, experts, classes = experts_atlas
    client = TestClient(create_app(db, experts))
    assert client.get("/api/status").json()["experts"] is True
    query = classes["t0/ft1"][0]
    body = client.get("/api/text-search", params={"q": query, "limit": 50}).json()
    found = [r["model"] for r in body["results"]]
    scores = [r["score"] for r in body["results"]]
    assert body["query"] == query and sorted(found) == sorted(classes) and scores == sorted(scores, reverse=True)
    # the weights know what they were trained on, for models the experts never saw: for each class, the k
    # held-out models ranked first are mostly the k trained on it (R-precision over the held-out fine-tunes;
    # a random ranking scores k / n for each class)
    unseen = [m for m in classes if held_out(m)]
    precision, chance = [], []
    for name in sorted({c for m in unseen for c in classes[m]}):
        ranked = [r["model"] for r in client.get("/api/text-search", params={"q": name, "limit": 50}).json()["results"]]
        ranked = [m for m in ranked if m in unseen]
        k = sum(name in classes[m] for m in unseen)
        precision.append(sum(name in classes[m] for m in ranked[:k]) / k)
        chance.append(k / len(unseen))
    mean, at_random = sum(precision) / len(precision), sum(chance) / len(chance)
    assert mean >= at_random + 0.3, (mean, at_random, precision)
    assert client.get("/api/text-search", params={"q": query, "limit": 2}).json()["results"] == body["results"][:2]
    assert "note" not in body  # a query unlike every class the experts know is ranked with a note saying so
    assert "unlike every class" in client.get("/api/text-search", params={"q": "the stock market"}).json()["note"]
    assert client.get("/api/text-search", params={"q": ""}).status_code == 422
    with pytest.raises(BadInputError, match="not a ProbeX experts folder"):
        create_app(db, db.parent)
