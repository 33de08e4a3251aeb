"""The Python API as a library user meets it: inputs of the wrong kind refused clearly, objects left as
they were when a call fails, shared process state (BLAS threads) restored whatever the overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ancestree.blas import controller, one_blas_thread
from ancestree.errors import BadInputError
from ancestree.fingerprint import fingerprint, fingerprint_many
from ancestree.graph import GraphRecovery
from ancestree.graph.evaluate import evaluate
from ancestree.graph.model_graph import ModelGraph
from ancestree.index import Atlas
from ancestree.io import load_model
from ancestree.lineage import rank_parents
from conftest import small_tensors, write_hf_folder


@pytest.fixture
def three(tmp_path: Path) -> list[Path]:
    """A base and two fine-tune-like copies of it."""
    base = small_tensors(1)
    rng = np.random.default_rng(3)
    out = [write_hf_folder(tmp_path / "base", base)]
    for k in range(2):
        out.append(write_hf_folder(tmp_path / f"ft{k}", {n: (v + 0.05 * rng.standard_normal(v.shape)).astype(v.dtype)
                                                       for n, v in base.items()}))
    return out


def test_one_path_where_a_list_is_expected_is_refused(three: list[Path], tmp_path: Path) -> None:
    """A string is a sequence too: `rank_parents(child, "path")` said "/: given twice among the candidates",
    `fingerprint_many("path")` tried to read "/", `Atlas.add("path")` read single letters as models."""
    with pytest.raises(TypeError, match="candidates takes a list, not one str"):
        rank_parents(three[1], str(three[0]))
    with pytest.raises(TypeError, match="sources takes a list"):
        fingerprint_many(str(three[0]))
    with Atlas(tmp_path / "a.db") as atlas, pytest.raises(TypeError, match="paths takes a list"):
        atlas.add(three[0])
    assert not list(tmp_path.glob("a.db")) or Atlas(tmp_path / "a.db").ls() == []


def test_graph_recovery_takes_any_iterable_and_refuses_settings_it_cannot_use(three: list[Path]) -> None:
    """`fit(generator)` returned an empty graph (the id check spent it); `neighbours=0` quietly recovered less
    and a path given for a fingerprint failed on `'str' object has no attribute 'id'`."""
    fps = fingerprint_many(three, progress=False)
    whole = GraphRecovery().fit(fps).graph_.to_dict()
    assert GraphRecovery().fit(f for f in fps).graph_.to_dict() == whole and len(whole["edges"]) == 2
    for bad in ({"neighbours": 0}, {"neighbours": 2.5}, {"related": "0.3"}, {"related": 0}):
        with pytest.raises(ValueError, match="must be"):
            GraphRecovery(**bad).fit(fps)
    with pytest.raises(TypeError, match="Fingerprint objects"):
        GraphRecovery().fit([str(three[0])])


def test_evaluate_refuses_a_prediction_sharing_no_model_with_the_truth(three: list[Path]) -> None:
    """Ids made relative to another folder scored 0 edges found and a perfect direction accuracy."""
    truth = ModelGraph.from_dict({"models": [{"id": "base"}, {"id": "ft0"}],
                                  "edges": [{"parent": "base", "child": "ft0", "relation": "finetune"}]})
    pred = ModelGraph.from_dict({"models": [{"id": "zoo/base"}, {"id": "zoo/ft0"}],
                                 "edges": [{"parent": "zoo/base", "child": "zoo/ft0", "relation": "finetune"}]})
    with pytest.raises(ValueError, match="shares no model id"):
        evaluate(pred, truth)
    assert evaluate(truth, truth).edge_f1 == 1.0


def test_an_open_model_takes_the_id_given_and_a_graph_keeps_edge_sources(three: list[Path]) -> None:
    with load_model(three[0]) as model:
        assert fingerprint(model, model_id="custom").id == "custom"
        assert fingerprint_many([("given", model)], progress=False)[0].id == "given"
    data = {"models": [{"id": "a"}, {"id": "b"}], "edges": [{"parent": "a", "child": "b", "relation": "finetune",
                                                              "confidence": 1.0, "source": "declared"}]}
    assert ModelGraph.from_dict(data).to_dict()["edges"][0]["source"] == "declared"


def test_a_failed_fit_leaves_the_linearized_ranker_as_it_was(three: list[Path]) -> None:
    """After a fit that raised, the ranker kept the whole α grid and ranked with its first value (0.25)."""
    from ancestree.lineage.linearized import LinearizedRanker

    ranker = LinearizedRanker("l2", probe_data=np.zeros((4, 8), dtype=np.float32), alpha=0.5)
    with pytest.raises(BadInputError):
        ranker.fit([(three[1].parent / "missing", [three[0], three[2]], None)])
    assert ranker.alpha == 0.5 and ranker.alphas == [0.5]


def blas_threads() -> list[int]:
    """Threads of the BLAS libraries the limit applies to (those loaded when ancestree first limited them)."""
    return sorted({int(lib["num_threads"]) for lib in controller().info() if lib["user_api"] == "blas"})


def test_overlapping_blas_limits_restore_the_process_limits() -> None:
    """Two calls inside ancestree at once (two threads), the first to finish first: it restored the limits it
    saw (the process's), the second then restored the "1" it saw on entry, and the whole process stayed on
    one BLAS thread. Entered and left in that order here (one thread: BLAS libraries may keep limits per
    thread, which would hide the order)."""
    before = blas_threads()
    first, second = one_blas_thread(), one_blas_thread()
    first.__enter__()
    second.__enter__()
    assert blas_threads() == [1]
    first.__exit__(None, None, None)
    assert blas_threads() == [1]  # the second is still inside
    second.__exit__(None, None, None)
    assert blas_threads() == before


def test_numpy_settings_and_a_fit_failing_late_from_a_review(three: list[Path]) -> None:
    """`GraphRecovery(neighbours=np.int64(5))` (a sweep over np.arange) was refused as no whole number; a
    `LinearizedRanker.fit` failing after its task loop (no tasks) still left the whole α grid."""
    from ancestree.lineage.linearized import LinearizedRanker

    fps = fingerprint_many(three, progress=False)
    assert len(GraphRecovery(neighbours=np.int64(5), related=np.float32(0.3)).fit(fps).graph_.to_dict()["edges"]) == 2
    ranker = LinearizedRanker("l2", probe_data=np.zeros((4, 8), dtype=np.float32), alpha=0.5)
    with pytest.raises(ValueError):
        ranker.fit([])
    assert ranker.alphas == [0.5]
