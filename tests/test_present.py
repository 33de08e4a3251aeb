"""Writers: round trips, well-formed output, the self-contained HTML page, PNG, and model cards."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import networkx as nx
import pytest

from ancestree.graph import ModelGraph, graph_from_edges
from ancestree.present import WRITERS, render


@pytest.fixture
def graph() -> ModelGraph:
    g = graph_from_edges(["base", "ft", "q", 'we"ird<id>', "m", "other"],
                         [("base", "ft", "finetune", 0.91), ("ft", "q", "quantized", 0.99),
                          ("base", 'we"ird<id>', "adapter", 0.7), ("ft", "m", "merge", 0.8), ('we"ird<id>', "m", "merge", 0.8)])
    g.graph.nodes["base"]["format"] = "safetensors"
    return g


def test_json_roundtrip(graph: ModelGraph) -> None:
    text = render(graph, "json")
    again = ModelGraph.from_dict(json.loads(text))
    assert render(again, "json") == text
    assert {m["id"]: m["tree"] for m in json.loads(text)["models"]}["other"] == 1


def test_graphml_readable_by_networkx(graph: ModelGraph) -> None:
    g = nx.read_graphml(io.BytesIO(render(graph, "graphml").encode()))
    assert set(g.nodes) == set(graph.models)
    assert g.edges["ft", "q"]["relation"] == "quantized" and g.edges["ft", "q"]["confidence"] == pytest.approx(0.99)
    assert g.nodes["other"]["tree"] == 1


def test_dot_and_mermaid_well_formed(graph: ModelGraph) -> None:
    dot = render(graph, "dot")
    assert dot.startswith("digraph") and dot.rstrip().endswith("}") and dot.count("{") == dot.count("}")
    assert dot.count("->") == 5 and '\\"' in dot  # quotes in ids are escaped
    mer = render(graph, "mermaid").splitlines()
    assert mer[0] == "flowchart TD"
    arrows = [l for l in mer if re.search(r"m\d+ (-->|-\.->|==>|---)\|", l)]
    assert len(arrows) == 5
    assert sum(l.strip() == "end" for l in mer) == sum(l.strip().startswith("subgraph") for l in mer) == 2
    assert not any("<" in l for l in mer if "[" in l)
    # each edge drawn parent to child, with its relation, confidence and style
    assert '"ft" -> "q" [label="quantized 0.99", style=dotted];' in dot
    assert '"base" -> "ft" [label="finetune 0.91", style=solid];' in dot and '"ft" -> "m" [label="merge 0.80", style=bold];' in dot
    node = {m.group(2): m.group(1) for m in (re.match(r'\s*(m\d+)\["(.*)"\]$', l) for l in mer) if m}
    assert f'{node["ft"]} -.->|"quantized 0.99"| {node["q"]}' in [l.strip() for l in mer]
    assert f'{node["base"]} -->|"finetune 0.91"| {node["ft"]}' in [l.strip() for l in mer]


def test_html_is_self_contained_and_carries_the_data(graph: ModelGraph) -> None:
    page = render(graph, "html")
    assert "<svg" in page and "wheel" in page and "click" in page
    assert not re.search(r"""(src|href)=["']https?://""", page)  # no CDN, no external file
    data = json.loads(re.search(r'<script id="graph-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert {m["id"] for m in data["models"]} == set(graph.models) and len(data["edges"]) == 5
    assert all("x" in m and "y" in m for m in data["models"])


@pytest.mark.slow
def test_html_page_in_headless_chromium(tmp_path: Path) -> None:
    """`tree -f html` of 300 models, opened from disk: every model drawn, a name typed in the find box
    brings the model into view and shows its parent, clicking a model shows it, the wheel zooms."""
    from playwright.sync_api import expect

    from conftest import chromium_page

    ids = [f"org/t{t:02d}-m{i:02d}" for t in range(15) for i in range(20)]
    edges = [(f"org/t{t:02d}-m{(i - 1) // 3:02d}", f"org/t{t:02d}-m{i:02d}", "finetune", 0.9) for t in range(15) for i in range(1, 20)]
    (tmp_path / "g.html").write_text(render(graph_from_edges(ids, edges), "html"))
    with chromium_page() as (page, errors):
        page.goto((tmp_path / "g.html").as_uri())
        assert page.locator("g.node").count() == 300 and page.locator("path.edge").count() == 285
        before = page.get_attribute("#world", "transform")
        page.fill("#find", "t07-m1")  # m10..m19 of tree 7
        expect(page.locator("#found a.hit")).to_have_count(10)
        page.fill("#find", "t07-m13")
        page.press("#find", "Enter")
        expect(page.locator("#details h4")).to_have_text("org/t07-m13")
        expect(page.locator("#details")).to_contain_text("org/t07-m04 (finetune, 0.90)")
        assert page.get_attribute("#world", "transform") != before  # brought into view
        assert page.locator("g.node.sel").get_attribute("data-id") == "org/t07-m13"
        page.fill("#find", "no-such-model")
        expect(page.locator("#found")).to_have_text("no model matches")
        page.click("g.node[data-id='org/t07-m04']")
        expect(page.locator("#details h4")).to_have_text("org/t07-m04")
        expect(page.locator("#details")).to_contain_text("org/t07-m13 (finetune, 0.90)")
        zoom = page.get_attribute("#world", "transform")
        page.mouse.move(400, 300)
        page.mouse.wheel(0, -400)
        assert page.get_attribute("#world", "transform") != zoom
    assert errors == []


def test_text_shows_every_model(graph: ModelGraph) -> None:
    text = render(graph, "text")
    for m in graph.models:
        assert m in text
    assert "merge with" in text and "tree 1" in text


def test_png(graph: ModelGraph, tmp_path: Path) -> None:
    from ancestree.present.png import write_png

    write_png(graph, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_of_many_models_draws_dots_in_a_square_and_names_the_roots() -> None:
    """At 1 000 models a labelled box each was squeezed into 30 inches: the boxes covered each other and the
    edges. A large graph is drawn as dots, its trees wrapped into a square, only the roots named."""
    from ancestree.present.png import MAX_SIDE, draw

    ids = [f"t{t:02d}m{i:02d}" for t in range(30) for i in range(20)]
    edges = [(f"t{t:02d}m{(i - 1) // 3:02d}", f"t{t:02d}m{i:02d}", "finetune", 0.9) for t in range(30) for i in range(1, 20)]
    fig = draw(graph_from_edges(ids, edges))
    width, height = fig.get_size_inches()
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.texts]
    assert max(width, height) <= MAX_SIDE and 0.5 <= width / height <= 2.0, (width, height)
    assert sorted(names) == [f"t{t:02d}m00" for t in range(30)]  # every root, nothing else
    assert "600 models in 30 trees" in ax.get_title()
    small = draw(graph_from_edges(ids[:20], edges[:19]))
    assert sum(bool(t.get_text()) for t in small.axes[0].texts) == 20  # a box each while they fit (arrows: no text)


def test_every_format_registered() -> None:
    assert set(WRITERS) == {"json", "dot", "graphml", "mermaid", "text", "html"}


def test_cards_written_readable_and_not_overwritten(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from ancestree.present.cards import write_cards

    folders = {}
    for m in ("base", "ft", "merged", "declared"):
        folders[m] = tmp_path / m
        folders[m].mkdir()
    (folders["declared"] / "README.md").write_text("---\nbase_model: org/elsewhere\nlicense: mit\n---\n# declared\n")
    g = graph_from_edges(list(folders), [("base", "ft", "finetune", 0.9), ("base", "merged", "merge", 0.9),
                                         ("ft", "merged", "merge", 0.9), ("ft", "declared", "quantized", 0.9)])
    changes = {c.model: c for c in write_cards(g, folders)}
    card = ModelCard.load(folders["ft"] / "README.md")
    assert card.data.base_model == "base" and card.data.base_model_relation == "finetune"
    merged = ModelCard.load(folders["merged"] / "README.md")
    assert sorted(merged.data.base_model) == ["base", "ft"] and merged.data.base_model_relation == "merge"
    assert changes["declared"].action == "kept" and changes["declared"].declared == "org/elsewhere"
    kept = ModelCard.load(folders["declared"] / "README.md")
    assert kept.data.base_model == "org/elsewhere" and kept.data.license == "mit"
    assert "base" not in changes  # roots get no base_model
    forced = {c.model: c for c in write_cards(g, folders, force=True)}
    assert forced["declared"].action == "overwritten"
    again = ModelCard.load(folders["declared"] / "README.md")
    assert again.data.base_model == "ft" and again.data.base_model_relation == "quantized" and again.data.license == "mit"


def test_a_card_naming_the_recovered_base_otherwise_agrees(tmp_path: Path) -> None:
    """A card declaring ``hub/org/base`` (a PEFT adapter records the path it was loaded from) for the model
    scanned as ``org/base`` names the recovered parent as ``tree`` resolves cards: no conflict is reported,
    its spelling stays and only the relation is added; a card naming another model is still kept and reported."""
    from huggingface_hub import ModelCard

    from ancestree.present.cards import write_cards

    folders = {m: tmp_path / m for m in ("org/base", "org/ft", "org/other", "org/kid")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (folders["org/ft"] / "README.md").write_text("---\nbase_model: hub/org/base\nlicense: mit\n---\n# ft\n")
    (folders["org/kid"] / "README.md").write_text("---\nbase_model: org/other\n---\n# kid\n")
    g = graph_from_edges(list(folders), [("org/base", "org/ft", "finetune", 0.9), ("org/base", "org/other", "finetune", 0.9),
                                         ("org/ft", "org/kid", "finetune", 0.9)])
    changes = {c.model: c for c in write_cards(g, folders)}
    assert changes["org/ft"].action == "written" and not changes["org/ft"].reason
    card = ModelCard.load(folders["org/ft"] / "README.md")
    assert card.data.base_model == "hub/org/base" and card.data.base_model_relation == "finetune" and card.data.license == "mit"
    assert changes["org/kid"].action == "kept" and changes["org/kid"].reason
    assert ModelCard.load(folders["org/kid"] / "README.md").data.base_model == "org/other"


def test_cards_use_only_hub_relation_values(tmp_path: Path) -> None:
    """The Hub knows adapter/merge/quantized/finetune; a pruned copy or a duplicate gets its base_model and
    ancestree_relation, no base_model_relation (the Hub infers its own), and reads back as declared."""
    from huggingface_hub import ModelCard

    from ancestree.io.folder import folder_metadata
    from ancestree.present.cards import write_cards

    folders = {m: tmp_path / m for m in ("base", "pruned", "copy")}
    for f in folders.values():
        f.mkdir()
    (folders["pruned"] / "README.md").write_text("---\nbase_model: base\nlicense: mit\n---\n# p\n")
    g = graph_from_edges(list(folders), [("base", "pruned", "pruned", 0.9), ("base", "copy", "duplicate", 0.9)])
    changes = {c.model: c for c in write_cards(g, folders)}
    assert changes["pruned"].action == "written" and changes["copy"].action == "written"
    for m, rel in (("pruned", "pruned"), ("copy", "duplicate")):
        card = ModelCard.load(folders[m] / "README.md")
        assert card.data.base_model == "base" and "base_model_relation" not in card.data.to_dict()
        assert card.data.ancestree_relation == rel
        assert folder_metadata(folders[m], "safetensors").declared_relation == rel
    assert {c.action for c in write_cards(g, folders)} == {"unchanged"}


def test_layout_wraps_trees_into_rows_without_overlap() -> None:
    from ancestree.present.layout import layered_layout

    ids = [f"t{t}m{i}" for t in range(6) for i in range(4)]
    edges = [(f"t{t}m0", f"t{t}m{i}", "finetune", 0.9) for t in range(6) for i in range(1, 4)]
    g = graph_from_edges(ids, edges)
    flat = layered_layout(g)
    rows = layered_layout(g, row_width=8.0)
    assert len(set(flat.values())) == len(set(rows.values())) == len(ids)  # no two models on one spot
    assert max(x for x, _ in rows.values()) < 8.0 < max(x for x, _ in flat.values())
    assert min(y for _, y in rows.values()) < min(y for _, y in flat.values())  # later trees went below
    for p, c, _ in g.edges():  # children still drawn below their parent
        assert rows[c][1] < rows[p][1]


def test_html_page_of_hundreds_of_trees_keeps_the_page_shape() -> None:
    """`-f html` wrapped its trees into rows 30 models wide whatever their number: 300 trees of 20 models made
    a column 30 times as high as wide, a few pixels across once the page fits it."""
    ids = [f"t{t}/m{i}" for t in range(300) for i in range(20)]
    edges = [(f"t{t}/m{(i - 1) // 2}", f"t{t}/m{i}", "finetune", 0.9) for t in range(300) for i in range(1, 20)]
    page = render(graph_from_edges(ids, edges), "html")
    models = json.loads(re.search(r'<script id="graph-data" type="application/json">(.*?)</script>', page, re.S).group(1))["models"]
    xs, ys = [m["x"] for m in models], [m["y"] for m in models]
    assert len({(m["x"], m["y"]) for m in models}) == len(ids)
    assert 0.8 < (max(xs) - min(xs) + 1) / (max(ys) - min(ys) + 1) < 4.0


def test_pictures_of_a_chain_of_thousands_of_models(tmp_path: Path) -> None:
    """The layout placed models by recursion, one level a generation: a chain of 500 checkpoints raised
    RecursionError in `--png` and `-f html`."""
    from ancestree.present.png import write_png

    ids = [f"ckpt{i:04d}" for i in range(2000)]
    g = graph_from_edges(ids, [(a, b, "finetune", 0.9) for a, b in zip(ids, ids[1:])])
    write_png(g, tmp_path / "chain.png")
    assert (tmp_path / "chain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(re.search(r'<script id="graph-data" type="application/json">(.*?)</script>', render(g, "html"), re.S).group(1))
    assert sorted(m["y"] for m in data["models"]) == [-float(i) for i in range(1999, -1, -1)]


def test_card_relation_of_ours_is_kept_unless_forced(tmp_path: Path) -> None:
    """A card declaring `ancestree_relation: pruned` (no Hub value) is a declaration like any other."""
    from huggingface_hub import ModelCard

    from ancestree.present.cards import write_card

    (tmp_path / "README.md").write_text("---\nbase_model: parent\nancestree_relation: pruned\n---\n# m\n")
    assert write_card(tmp_path, "parent", "finetune")[0] == "kept"
    assert ModelCard.load(tmp_path / "README.md").data.ancestree_relation == "pruned"
    assert write_card(tmp_path, "parent", "finetune", force=True)[0] == "overwritten"
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.ancestree_relation == "finetune" and card.data.base_model_relation == "finetune"
    assert write_card(tmp_path, "parent", "finetune")[0] == "unchanged"


def test_pictures_label_hugging_face_cache_folders_by_their_repository() -> None:
    """A cache folder was drawn as "…-acme--llama-base", its older snapshot as the end of a hash."""
    repo, old = "hf-cache/models--acme--llama-base", "hf-cache/models--acme--llama-base/snapshots/0000aaaa1111"
    page = render(graph_from_edges([repo, old, "a" * 40], [(old, repo, "finetune", 0.9)]), "html")
    data = json.loads(re.search(r'<script id="graph-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    labels = {m["id"]: m["label"] for m in data["models"]}
    assert labels == {repo: "acme/llama-base", old: "acme/llama-base@0000aa", "a" * 40: "…" + "a" * 21}
    from ancestree.fingerprint.types import short_name

    assert short_name(repo + "/", 22) == "acme/llama-base"  # a path given with its trailing slash
    assert short_name("hub/models--meta-llama--Llama-2-7b-hf/snapshots/abcdef0123", 18) == "…ma-2-7b-hf@abcdef"
    assert all(len(short_name("a" * 10, w)) <= w for w in range(0, 12))


def test_pictures_draw_any_name_and_graphml_holds_any_name(tmp_path: Path) -> None:
    """A `$` pair in a name was parsed as TeX by matplotlib (an internal error, no picture), CJK names
    warned once per glyph on stderr, every `*/model.safetensors` of a scan was labelled "…model.safetensors",
    and a control character in a name made GraphML no XML reader accepts."""
    import warnings

    from ancestree.fingerprint.types import short_name
    from ancestree.present.png import write_png

    names = ["x$^$y", "run_$_$", "a$}$b", "模型-基础", "llama-base/model.safetensors", "bad\x01name"]
    graph = graph_from_edges(names, [(names[0], names[1], "finetune", 0.9), (names[4], names[5], "finetune", 0.8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning reaches the user
        write_png(graph, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert short_name("llama-base/model.safetensors", 18) == "llama-base"
    assert short_name("runs/x/pytorch_model-00001-of-00002.bin", 18) == "runs/x"
    assert short_name("runs/model-1000.safetensors", 30) == "runs/model-1000.safetensors"  # a checkpoint's own name
    assert short_name("model.safetensors", 18) == "model.safetensors"  # nothing else names it
    read = nx.read_graphml(io.StringIO(render(graph, "graphml")))
    assert "bad\\x01name" in read.nodes and read.number_of_edges() == 2
    # a file name that is not UTF-8 reaches Python as lone surrogates (a review): no XML reader took them
    odd = graph_from_edges(["ft\udcff.safetensors", "base"], [("base", "ft\udcff.safetensors", "finetune", 0.9)])
    assert "ft\\udcff.safetensors" in nx.read_graphml(io.StringIO(render(odd, "graphml"))).nodes
