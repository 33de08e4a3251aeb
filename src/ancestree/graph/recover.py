"""ancestree's Model Graph recovery (the default method), as a scikit-learn style estimator.

>>> rec = GraphRecovery().fit(fingerprints)      # doctest: +SKIP
>>> rec.graph_.to_dict()                          # doctest: +SKIP

Steps, each in its own module:

1. models are grouped by architecture (:mod:`.vectors`); different architectures are never linked;
2. duplicates (same content key, or identical values after alignment) are collapsed onto one copy;
3. candidate pairs come from nearest neighbours on fingerprint vectors (:mod:`.candidates`), ~N·k pairs;
4. trees: candidate pairs whose sketches correlate (> ``related``; independent trainings give ≈ 0) are
   linked, and the connected components are the trees — their number is estimated, never given;
5. quantized and pruned copies and merges are recognised first (:mod:`.relations`): quantized copies are
   leaves, merges get one edge per parent;
6. every other edge comes from the minimum spanning arborescence of each tree under the cost
   ``angle distance(p, c) − w·log P_dir(p→c)`` (:func:`.vectors.angle_distances`, the learned direction model
   of :mod:`.direction`), minus a bonus for declared base models: structure and direction are chosen together,
   so a sibling that drifted alongside a model does not become its parent; the root is weighed by a vote of
   the whole tree (which member the direction model finds older than all the others);
7. each edge's relation is refined from the pair's evidence (low-rank difference → adapter ...), PEFT
   adapter folders are attached to their base, confidences are calibrated (:mod:`.calibration`), and every
   disagreement between declared and recovered lineage is reported in ``graph_.notes``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import cast

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ancestree.blas import one_blas_thread
from ancestree.align import content_correlation
from ancestree.errors import IncomparableError
from ancestree.fingerprint import Fingerprint
from ancestree.fingerprint.types import comparable_pair
from ancestree.graph.arborescence import minimum_arborescence
from ancestree.graph.calibration import Calibration
from ancestree.graph.candidates import bridging_pairs, candidate_pairs, pair_correlations, pair_distances
from ancestree.graph.direction import DirectionModel, pair_features
from ancestree.graph.fans import NEAR_COST, ROOT_NEAR_COST, lift_to_grandparents, root_above
from ancestree.graph.metadata import declared_parents, report_conflicts
from ancestree.graph.model_graph import ModelGraph
from ancestree.graph.relations import (
    DUPLICATE_DISTANCE,
    MERGE_CANDIDATES,
    is_duplicate,
    is_pruned_copy,
    quantized_source,
    merge_bases,
    merge_coordinates,
    merge_kin,
    merge_parents,
    merge_tolerance,
    pruning_sources,
    resolve_merges,
    wide_merge_candidates,
)
from ancestree.graph.vectors import (GroupVectors, angle_distances, arch_key, group_by_architecture, group_vectors, matrix_tensors,
                                     near_architectures)
from ancestree.relate import relate, shares_weights, verdict
from ancestree.relate.evidence import low_rank_limit
from ancestree.relate.precision import CONVERTED_BITS, integer_bits
from ancestree.relate.verdict import PRUNED_ZEROS

@dataclass
class Edge:
    parent: str
    child: str
    relation: str
    score: float  # uncalibrated probability-like score, calibrated at the end
    kind: str = "tree"  # which step decided it: duplicate, quantized, pruned, merge, tree, adapter
    features: dict[str, float] = field(default_factory=dict)


#: How much a task-arithmetic merge's base lowers the cost of ``base → member`` (in angle-distance units; a
#: declared base gets ``declared_bonus``, 2). The base is the members' parent as a rule, but a merge taken
#: over the root of fine-tunes of a fine-tune (fine-tunes of an Instruct model merged over the base model)
#: names their grandparent: a review's hub of that kind kept 2 of its 6 edges at 2, 4 at 0.5, all 6 at 0.2
#: (with :func:`~ancestree.graph.relations.merge_kin`'s rule, which holds either way). ``wild`` 0.923 / 0.953.
MERGE_BASE_BONUS = 0.2


class GraphRecovery:
    """Recover the Model Graph from fingerprints.

    Parameters: ``related`` (mean sketch correlation above which two models are taken to share an ancestor
    without a further check; 0.3 lies midway between the highest correlation of unrelated models, 0.135, and
    the lowest of a true edge, 0.499, on the ``lineage`` zoo and ``tiny`` seeds 4–6; a pair below it is still
    joined when its pair evidence calls the two relatives, so raising it moves work to those checks rather
    than splitting trees),
    ``neighbours`` (k of the nearest-neighbour candidate search), ``use_declared`` (declared base models as a
    prior), ``declared_bonus`` (how much a declaration lowers an edge's cost, in angle-distance units: 2
    trusts a card against a sibling up to e ≈ 2.7 times nearer in squared angle; on the selection zoos
    (``wild`` seeds 1–4, ``tiny`` seeds 4–6, ``lineage``, all with cards) 1 / 2 / 3 / 5 differ only on
    ``wild`` seed 4: 0.906 / 0.912 / 0.912 / 0.912, so the smallest of the plateau),
    ``direction_weight`` (weight of ``−log P_dir`` in the edge cost, and of the root vote; chosen on the
    ``lineage`` zoo and ``tiny`` seeds 4–6: without the root vote 0.05 from 0.05, 0.1, 0.2, 0.4; with it
    0.01 / 0.02 / 0.03 / 0.05 / 0.1 / 0.2 give lineage 0.893 / 0.900 / 0.893 / 0.886 / 0.861 / 0.814, tiny
    unchanged, so 0.02),
    ``direction`` / ``calibration`` (fitted models; the shipped ones by default), ``classify`` (refine
    relations from exact pair evidence), ``root_vote`` (weigh each tree's root by the whole tree's direction
    evidence, :meth:`_root_costs`; off, only the direction terms of the edges decide it).
    """

    def __init__(
        self,
        related: float = 0.3,
        neighbours: int = 10,
        use_declared: bool = True,
        declared_bonus: float = 2.0,
        direction_weight: float = 0.02,
        direction: DirectionModel | None = None,
        calibration: Calibration | None = None,
        classify: bool = True,
        settled_bonus: float = 0.1,
        root_vote: bool = True,
    ) -> None:
        self.related = related
        self.neighbours = neighbours
        self.use_declared = use_declared
        self.declared_bonus = declared_bonus
        self.direction_weight = direction_weight
        self.direction = direction
        self.calibration = calibration
        self.classify = classify
        self.settled_bonus = settled_bonus
        self.root_vote = root_vote

    # -- public ---------------------------------------------------------------------------------------
    def fit(self, fingerprints: Sequence[Fingerprint], settled: Collection[tuple[str, str]] = ()) -> GraphRecovery:
        """Recover the graph of ``fingerprints``; results in ``graph_`` (its trees: ``graph_.trees()``) and
        ``edges_``.

        ``settled``: ``(parent, child)`` edges already decided (an index placing new models among stored
        ones): their cost is lowered by ``settled_bonus`` (a recovery of a subset keeps their direction
        unless the evidence is against them), and, if recovered, they are not refined by pair evidence again.
        """
        fingerprints = list(fingerprints)  # a generator would be spent by the first pass over it
        self._check_params(fingerprints)
        ids = [f.id for f in fingerprints]
        if len(set(ids)) != len(ids):
            raise ValueError("model ids must be unique")
        # tensors holding NaN/inf (a diverged run) are left out of every comparison; a model with no finite
        # matrix left is compared with nothing (a tree of its own), the others keep their architecture group
        finite = [f.finite() for f in fingerprints]
        damaged = [(f, g) for f, g in zip(fingerprints, finite) if g is not f]
        fingerprints = [f if matrix_tensors(g) else g for f, g in zip(fingerprints, finite)]
        self.direction_ = self.direction or DirectionModel.load()
        self.calibration_ = self.calibration or Calibration.load(weights_only=not self.use_declared)
        self.fps_ = {f.id: f for f in fingerprints}
        self.settled_ = set(settled)
        self.declared_ = declared_parents(fingerprints) if self.use_declared else {}
        self.edges_: list[Edge] = []
        self.vectors_: dict[tuple, GroupVectors] = {}
        groups = group_by_architecture(fingerprints)
        for key, members in groups.items():
            if key[0] == "adapter":
                continue
            self._fit_group(members)
        self._attach_adapters([f for f in fingerprints if arch_key(f)[0] == "adapter"])
        self.graph_ = self._build_graph(fingerprints, self.settled_)
        self.graph_.notes += [{"model": f.id, "problem": f"NaN or infinite values in {len(f) - len(g)} of {len(f)} tensors; "
                               "those tensors were left out of every comparison"} for f, g in damaged]
        self.graph_.notes += [_near_note(*near, self.related) for near in near_architectures(groups)]
        return self

    def _check_params(self, fingerprints: list[Fingerprint]) -> None:
        """Refuse what would fail deep inside numpy, or quietly recover less (``neighbours=0``)."""
        odd = next((f for f in fingerprints if not isinstance(f, Fingerprint)), None)
        if odd is not None:
            raise TypeError(f"fit takes Fingerprint objects (ancestree.fingerprint.fingerprint(path)), not {type(odd).__name__}")
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, Integral) or self.neighbours < 1:
            raise ValueError(f"neighbours must be a whole number of at least 1, not {self.neighbours!r}")
        if isinstance(self.related, bool) or not isinstance(self.related, Real) or not 0 < self.related <= 1:
            raise ValueError(f"related must be a correlation in (0, 1], not {self.related!r}")

    # -- one architecture -----------------------------------------------------------------------------
    def _fit_group(self, members: list[Fingerprint]) -> None:
        gv = group_vectors(members)
        self.vectors_[arch_key(members[0])] = gv
        # neighbours in both geometries: plain scale-free distance (copies, merges) and angles (the tree)
        pairs = np.unique(np.vstack([candidate_pairs(gv.U, self.neighbours), candidate_pairs(gv.A, self.neighbours)]), axis=0)
        declared = {(min(c, p), max(c, p)) for c, p in self._declared_pairs(members, list(range(len(members))))}
        if declared:
            pairs = np.unique(np.vstack([pairs, np.array(sorted(declared), dtype=np.int64)]), axis=0)
        dist = pair_distances(gv.U, pairs)
        corr = pair_correlations(gv.Z, pairs)
        reps = self._collapse_duplicates(gv, members, pairs, dist)
        keep = np.array([reps[i] == i and reps[j] == j for i, j in pairs], dtype=bool) if len(pairs) else np.zeros(0, bool)
        pairs, dist, corr = pairs[keep], dist[keep], corr[keep]
        related = corr > self.related
        n = len(members)
        # a declared base far from its child (a run that moved a long way) joins the child's tree when the
        # full pair evidence says the two share weights; a card naming an unrelated model joins nothing
        if declared:  # only declared pairs are looked at: the loop stays off the path of a zoo without cards
            codes = np.array([i * n + j for i, j in declared], dtype=np.int64)
            _confirm_by_evidence(members, pairs, related, ~related & np.isin(pairs[:, 0] * n + pairs[:, 1], codes))
        pairs, dist = pairs[related], dist[related]
        bridges = self._bridges(gv, members, reps, _components(pairs, n))
        pairs, dist = np.vstack([pairs, bridges]), np.r_[dist, pair_distances(gv.U, bridges)]
        labels = _components(pairs, n)
        neighbours: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for (i, j), d in zip(pairs, dist):
            neighbours[i].append((float(d), int(j)))
            neighbours[j].append((float(d), int(i)))
        for lst in neighbours.values():
            lst.sort()
        with one_blas_thread():  # small solves per tree: threads would only spin
            for label in np.unique(labels):
                nodes = [i for i in np.flatnonzero(labels == label) if reps[i] == i]
                if len(nodes) > 1:
                    self._fit_tree(gv, members, cast("list[int]", nodes), neighbours)  # numpy ints index as ints

    def _bridges(self, gv: GroupVectors, members: list[Fingerprint], reps: list[int], labels: np.ndarray) -> np.ndarray:
        """Related pairs across the components of ``labels`` among the most correlated models (the
        representatives of duplicates only): a model that moved far from its parent stays in its tree.

        A pair correlated above ``related`` joins as any pair does; one in the band below it joins when the
        full pair evidence (the verdict of ``compare``) calls the two relatives, as a declared pair does, and
        is far above what independent weights reach by chance (small matrices correlate by chance: among 750
        unrelated models of one 16×16 matrix, 64 pairs passed the verdict)."""
        rows = np.array([i for i, r in enumerate(reps) if r == i], dtype=np.int64)
        local = bridging_pairs(gv.Z[rows], labels[rows], BRIDGE_NEIGHBOURS * self.neighbours)
        pairs = rows[local].reshape(-1, 2)
        corr = pair_correlations(gv.Z, pairs)
        related = corr > self.related
        _confirm_by_evidence(members, pairs, related, ~related & (corr > max(BRIDGE_CHECK, CHANCE_SDS * _chance_correlation(gv))))
        return pairs[related]

    def _collapse_duplicates(self, gv: GroupVectors, members: list[Fingerprint], pairs: np.ndarray, dist: np.ndarray) -> list[int]:
        """Union duplicates; returns the representative row of every row (and records duplicate edges)."""
        n = len(members)
        parent = list(range(n))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        by_key: dict[str, int] = {}
        for i, f in enumerate(members):
            if f.content_key in by_key and f.same_content(members[by_key[f.content_key]]):
                parent[find(i)] = find(by_key[f.content_key])
            else:
                by_key[f.content_key] = i
        for (i, j), d in zip(pairs, dist):
            if d <= DUPLICATE_DISTANCE and find(i) != find(j) and is_duplicate(members[i], members[j]):
                parent[find(i)] = find(j)
        classes: dict[int, list[int]] = defaultdict(list)
        for i in range(n):
            classes[find(i)].append(i)
        reps = list(range(n))
        for cls in classes.values():
            rep = min(cls, key=lambda i: (self._declares_copy(members, i, cls), *_original_rank(members[i])))
            for i in cls:
                reps[i] = rep
                if i != rep:
                    self.edges_.append(Edge(members[rep].id, members[i].id, "duplicate", 0.999, "duplicate"))
        return reps

    def _fit_tree(self, gv: GroupVectors, members: list[Fingerprint], nodes: list[int], neighbours: dict[int, list[tuple[float, int]]]) -> None:
        """Edges of one tree: copies and merges first, then the arborescence of the rest."""
        node_set = set(nodes)
        near = {i: [(d, j) for d, j in neighbours.get(i, []) if j in node_set] for i in nodes}
        # the coarsest matrix: a GGUF q4 file quantizes only part of the matrices and keeps the rest float32, which
        # by the mean (the rule before) made the q4 copy of a bfloat16 model finer than its source (bfloat16
        # with every model's floats rounded so: wild edge F1 0.747 / 0.801 -> 0.841 / 0.907; float32 zoos unchanged)
        precision = np.nanmin(np.where(gv.matched, gv.precision, np.nan), axis=1)
        zeros = np.nanmean(np.where(gv.matched, gv.zeros, np.nan), axis=1)
        leaves: set[int] = set()
        forced: dict[int, int] = {}
        # quantized copies: coarsest first, parent = the relative they are the nearest rounded copy of, among
        # those at least a conversion finer (a float16 file of a bfloat16 model's values is half a bit coarser)
        for c in sorted(nodes, key=lambda i: precision[i]):
            finer = [j for _, j in near[c][:MERGE_CANDIDATES] if precision[j] >= precision[c] + CONVERTED_BITS and j not in leaves]
            k = quantized_source(members[c], [(float(precision[j]), members[j]) for j in finer])
            if k is not None:
                self.edges_.append(Edge(members[finer[k]].id, members[c].id, "quantized", 0.99, "quantized"))
                leaves.add(c)
        # pruned copies: more exact zeros, the other weights unchanged
        pool = [i for i in nodes if i not in leaves]
        sources = np.array(pool, dtype=np.int64)
        sq = np.einsum("ij,ij->i", gv.U, gv.U) if np.nanmax(zeros[sources], initial=0.0) >= PRUNED_ZEROS else None
        for c in pool:
            source = next((p for p in pruning_sources(gv.U, c, sources, zeros, sq) if is_pruned_copy(members[p], members[c])), None)
            if source is not None:
                forced[c] = source
        # merges: an exact affine combination of two or more relatives, first among the nearest, then
        # (task arithmetic extrapolates far from its members) among the whole tree on sampled coordinates
        found: dict[int, tuple[list[int], list[float]]] = {}
        # sampled coordinates of this tree's rows only (the group can be far larger than one tree)
        row = {node: k for k, node in enumerate(nodes)}
        S = gv.U[np.ix_(nodes, merge_coordinates(gv.U.shape[1]))]  # type: ignore[arg-type]  # numpy's stubs refuse a list of ints

        def wide(c: int) -> list[int]:
            return [nodes[k] for k in wide_merge_candidates(S, row[c], [row[j] for j in pool if j != c], precision[c])]
        for c in nodes:
            if c in leaves or c in forced or not near[c]:
                continue
            nearest = [j for _, j in near[c] if j not in leaves][:MERGE_CANDIDATES]
            # every member of an exact dependency is a combination of the others: search once per dependency
            known = next(([j for j in {k, *sup} if j != c] for k, (sup, _) in found.items() if c in sup), None)
            for cands in ([known] if known else [nearest, None]):
                cands = wide(c) if cands is None else cands  # the wide search only when the nearest fail
                if len(cands) < 2:
                    continue
                tolerance = merge_tolerance(min(precision[j] for j in [c, *cands]))
                support, weights, residual = merge_parents(gv.U, c, cands, near[c][0][0], tolerance)
                if residual < tolerance:
                    found[c] = (support, weights)
                    break
        merges = resolve_merges(found, lambda base, kids: self._older(gv, base, kids))
        # a task-arithmetic merge names the model its members were fine-tuned from, its base, as a rule: a hint
        # (MERGE_BASE_BONUS), which a card naming another parent overrides
        bases = {m: (b, [c for c in cs if not self._declares_other(members, c, b) and not self._declares(members, b, c)])
                 for m, (b, cs) in merge_bases(merges, found).items()}
        for c, parents in merges.items():
            for p in parents:
                self.edges_.append(Edge(members[p].id, members[c].id, "merge", 0.98, "merge"))
        # merges stay in the arborescence as possible parents (models are fine-tuned from merges), held
        # below their first parent there; their own edges are the merge edges above. A merge on a loop
        # closed through its other parents is left out of the arborescence (it then has no tree children),
        # and so are its pruned copies (below it, they would otherwise be free to parent its own parents).
        inside = dict(merges)
        while True:
            out = set(merges) - set(inside)
            for c in sorted(forced, key=lambda i: zeros[i]):  # sources before their copies: zeros grow down a chain
                if forced[c] in out:
                    out.add(c)
            core = [i for i in nodes if i not in leaves and i not in out]
            chosen = self._arborescence(gv, members, core, near, {**forced, **{c: ps[0] for c, ps in inside.items()}}, inside, bases)
            loop = _cycle([(p, c) for p, c, *_ in chosen] + [(p, c) for c, ps in merges.items() for p in ps])
            if not loop.intersection(inside):
                break
            for c in loop.intersection(inside):
                del inside[c]
        for p, c, data, incoming in chosen:
            self._tree_edge(members, p, c, data, incoming, forced)
        # a pruned copy of a merge left out of the arborescence keeps its source
        in_core = set(core)
        for c, p in forced.items():
            if p not in in_core:
                self.edges_.append(Edge(members[p].id, members[c].id, "pruned", 0.99, "pruned"))

    def _arborescence(self, gv, members, core, near, forced, merges, bases) -> list[tuple[int, int, dict, list]]:
        """Edges among the core of one tree: the minimum spanning arborescence of learned costs.

        ``merges`` (child -> merge parents, already linked) sit below their first parent (in ``forced``) and
        may be parents of other models; no tree edge is recorded into them. ``bases`` holds the task-arithmetic
        merges' ``(base, members)`` (:func:`~ancestree.graph.relations.merge_bases`): ``base → member`` costs
        :data:`MERGE_BASE_BONUS` less, and no member is the parent of the base or of a fellow member, nor the
        merge of its base (:func:`~ancestree.graph.relations.merge_kin`; a copy's forced parent comes first).

        The cost of ``p → c`` is the pair's angle distance (:func:`~ancestree.graph.vectors.angle_distances`,
        the log of a geometric mean of squared per-tensor angles) minus ``direction_weight · log P_dir(p→c)``
        (and minus ``declared_bonus`` when ``c`` declares ``p``). Structure and direction are decided together:
        a sibling that drifted in the same direction as ``c`` can be nearer to ``c`` than their parent is, but
        it is not older than ``c``, and the direction term makes the parent cheaper. Candidate edges are the
        neighbour pairs of the tree in both directions, so the cost stays ~N·k. A child the arborescence hung
        below a sibling moves up to the shared parent when that explains it better as one update
        (:mod:`ancestree.graph.fans`).
        """
        if len(core) < 2:
            return []
        core_set = set(core)
        based = {(b, c) for b, cs in bases.values() for c in cs}
        kin = merge_kin(bases)
        # models stored in integers (int8, GGUF blocks) are releases for inference: nothing stored finer is
        # fine-tuned from them (the atlas's "quantized models are leaves"), so they parent only their like
        coarse = {i for i in core if integer_stored(members[i])}

        def allowed(a: int, b: int) -> bool:
            return a not in coarse or b in coarse or self._declares(members, b, a)

        # a declared base is a candidate even when it is not among the child's nearest neighbours: the
        # fine-tunes of one sweep are often nearer each other than to their parent
        linked = list(forced.items()) + self._declared_pairs(members, core) + [(c, p) for p, c in based]
        pairs = sorted({(min(c, p), max(c, p)) for c in core for _, p in near[c] if p in core_set}
                       | {(min(c, p), max(c, p)) for c, p in linked if c in core_set and p in core_set})
        if not pairs:
            return []
        P = np.array(pairs, dtype=np.int64)
        par = np.r_[P[:, 0], P[:, 1]]
        chi = np.r_[P[:, 1], P[:, 0]]
        dist = np.tile(angle_distances(gv, P), 2)
        prob = self.direction_.proba(pair_features(gv, par, chi))
        cost = self._edge_cost(dist, prob)
        data: dict[tuple[int, int], dict] = {}
        incoming: dict[int, list[tuple[float, int]]] = defaultdict(list)
        floor = float(cost.min()) - 1.0
        for a, b, w, pr in zip(par.tolist(), chi.tolist(), cost.tolist(), prob.tolist()):
            if b in merges.get(a, ()) or not allowed(a, b):  # a merge is no parent of what it was merged from
                continue
            if b in forced:  # a pruned copy keeps the parent it was copied from
                if forced[b] != a:
                    continue
                w = floor
            elif b in kin.get(a, ()):  # a merged model is no parent of the merge's base or of a fellow member
                continue
            elif self._declares(members, b, a):
                w -= self.declared_bonus
            elif (a, b) in based:
                w -= MERGE_BASE_BONUS
            if (members[a].id, members[b].id) in self.settled_:
                w -= self.settled_bonus
            data[(a, b)] = {"weight": w, "p_dir": pr}
            incoming[b].append((w, a))
        # one call for all components: the virtual root of the algorithm enters each component once
        parent_of = {c: p for p, c in minimum_arborescence(core, [(a, b, d["weight"]) for (a, b), d in data.items()],
                                                            self._root_costs(gv, core, forced))}
        # fans drawn as chains: a child moves up to its grandparent, or to the root above it, when that explains
        # it better as one update. A grandparent is weighed only when nearly as near as the parent (NEAR_COST);
        # the root of a wide fan is far (its fine-tunes share a drift), so it is weighed whatever its cost. Either
        # may lie outside the child's candidate pairs (in a wide fan most siblings do): its cost is computed then
        def may_move(q: int, c: int) -> bool:
            return c not in forced and q not in forced and not self._declares(members, c, q)

        def movable(ancestor: int, q: int, c: int, is_root: bool) -> bool:
            if not may_move(q, c) or not allowed(ancestor, c) or c in kin.get(ancestor, ()):
                return False
            self._add_costs(gv, [(ancestor, c)], data, incoming)
            return data[(ancestor, c)]["weight"] - data[(q, c)]["weight"] < (ROOT_NEAR_COST if is_root else NEAR_COST)

        # the first round's grandparents and roots in one batch; later rounds add the few they need
        self._add_costs(gv, [(a, c) for c, q in parent_of.items() if q in parent_of and may_move(q, c)
                             for a in (parent_of[q], root_above(parent_of, q)) if allowed(a, c)], data, incoming)
        lifted = lift_to_grandparents(parent_of, members, movable)
        parent_of.update(lifted)
        return [(p, c, data[(p, c)], incoming[c]) for c, p in parent_of.items() if c not in merges]

    def _add_costs(self, gv: GroupVectors, pairs: list[tuple[int, int]], data: dict, incoming: dict) -> None:
        """Arborescence costs and direction probabilities of the edges ``a → b`` of ``pairs`` that were no
        candidates, added to ``data`` and to ``b``'s incoming costs (one vectorised pass)."""
        new = [pair for pair in dict.fromkeys(pairs) if pair not in data]
        if not new:
            return
        P = np.array(new, dtype=np.int64)
        prob = self.direction_.proba(pair_features(gv, P[:, 0], P[:, 1]))
        for (a, b), w, pr in zip(new, self._edge_cost(angle_distances(gv, P), prob).tolist(), prob.tolist()):
            data[(a, b)] = {"weight": w, "p_dir": pr}
            incoming[b].append((w, a))

    def _edge_cost(self, dist: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """The arborescence cost of edges: angle distance minus ``direction_weight · log P_dir``."""
        return dist - self.direction_weight * np.log(np.maximum(prob, 1e-9))

    def _tree_edge(self, members, p: int, c: int, data: dict, incoming: list[tuple[float, int]], forced) -> None:
        """Record ``p → c`` with a raw score: the softmax share of ``p`` among ``c``'s candidate parents
        (costs as negative log-weights) times the direction probability; calibrated later."""
        costs = np.array([w for w, _ in incoming])
        choice = float(np.exp(-data["weight"] - np.logaddexp.reduce(-costs))) if len(costs) else 1.0
        pd = float(data["p_dir"])
        relation = "pruned" if forced.get(c) == p else "finetune"
        self.edges_.append(Edge(members[p].id, members[c].id, relation, choice * pd, "tree",
                                {"p_dir": pd, "choice": choice}))

    def _older(self, gv: GroupVectors, base: int, kids: list[int]) -> float:
        """Mean ``log P_dir(base → kid)``: how plausibly ``base`` is the parent of every one of ``kids``."""
        return float(self._votes(gv, [base], [kids])[0])

    def _votes(self, gv: GroupVectors, bases: list[int], kids: list[list[int]]) -> np.ndarray:
        """:meth:`_older` of each ``bases[k]`` over ``kids[k]``, vectorised over the pairs (in chunks of
        :data:`VOTE_CHUNK` pairs: the features of a pair are one row per tensor)."""
        sizes = np.array([len(k) for k in kids], dtype=np.int64)
        parents = np.repeat(np.asarray(bases, dtype=np.int64), sizes)
        children = np.array([y for k in kids for y in k], dtype=np.int64)
        logp = np.concatenate([np.zeros(0)] + [
            np.log(np.maximum(self.direction_.proba(pair_features(gv, parents[i:i + VOTE_CHUNK], children[i:i + VOTE_CHUNK])), 1e-9))
            for i in range(0, len(parents), VOTE_CHUNK)])
        sums = np.bincount(np.repeat(np.arange(len(bases)), sizes), weights=logp, minlength=len(bases))
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / sizes  # NaN for a base without kids, as the mean of nothing

    def _root_costs(self, gv: GroupVectors, core: list[int], forced: dict[int, int]) -> dict[int, float]:
        """What it costs to make each member of ``core`` the root of its tree: a tree-wide direction vote.

        One edge's direction is a weak cue (the arborescence weighs it by ``direction_weight``), and a tree
        re-rooted along a chain changes only the direction terms of that chain, so the root used to be
        decided by a few edges. But the oldest model is older than *every* member: its vote, the mean of
        ``log P_dir(x → y)`` over the other members (:meth:`_votes`; :data:`ROOT_VOTES` evenly spaced ones in
        a larger tree), gathers the whole tree's evidence. Rooting at ``x`` costs ``direction_weight · (n − 1)
        · (best vote − vote(x))``: the direction terms ``x`` would pay as the parent of every member. On the
        ``lineage`` zoo 6 of 10 roots were right without it, 8 with it (edge accuracy 0.850 → 0.886 at direction
        weight 0.05); ``tiny`` seeds 4–6 unchanged; a flat weight of 0.05–0.2 instead gave 7 roots (0.875).
        """
        roots = [i for i in core if i not in forced]
        if not self.root_vote or len(roots) < 2:
            return {}
        pool = np.asarray(core, dtype=np.int64)
        if len(pool) > ROOT_VOTES + 1:
            pool = pool[np.linspace(0, len(pool) - 1, ROOT_VOTES + 1).round().astype(np.int64)]
        votes = self._votes(gv, roots, [[int(y) for y in pool if y != x] for x in roots])
        weight = self.direction_weight * (len(core) - 1)
        return {x: weight * float(votes.max() - v) for x, v in zip(roots, votes)}

    def _declares_copy(self, members, i: int, copies: list[int]) -> bool:
        """Whether model ``i``'s card says it is a copy: relation ``duplicate``, or a declared base among its
        own duplicates. A declared base outside them is the family's parent and says nothing about which
        file is the original (ranking every declaring model last once made an ONNX export the original)."""
        if not self.use_declared:
            return False
        return members[i].declared.relation == "duplicate" or any(self._declares(members, i, j) for j in copies if j != i)

    def _declared_pairs(self, members: list[Fingerprint], nodes: list[int]) -> list[tuple[int, int]]:
        """``(child, parent)`` for every member of ``nodes`` whose card declares another member as its base."""
        if not self.declared_:
            return []
        index = {members[i].id: i for i in nodes}
        return [(c, index[p]) for c in nodes for p in self.declared_.get(members[c].id, ()) if p in index and index[p] != c]

    def _declares(self, members, child: int, parent: int) -> bool:
        return members[parent].id in self.declared_.get(members[child].id, ())

    def _declares_other(self, members, child: int, parent: int) -> bool:
        """``child``'s card names a base among the models, and not ``parent``."""
        declared = self.declared_.get(members[child].id, ())
        return bool(declared) and members[parent].id not in declared

    # -- PEFT adapter folders -------------------------------------------------------------------------
    def _attach_adapters(self, adapters: list[Fingerprint]) -> None:
        """A PEFT adapter hangs below the model its weight difference was applied to.

        The declared ``base_model_name_or_path`` is used when it names one of the inputs; otherwise the
        weights decide: if some model ``c`` equals ``p + ΔW`` (the merged adapter), ``p`` is the base.
        """
        for fp in adapters:
            declared = self.declared_.get(fp.id) or declared_parents([fp], list(self.fps_)).get(fp.id)
            parent = declared[0] if declared else self._adapter_base_by_weights(fp)
            if parent is not None:
                self.edges_.append(Edge(parent, fp.id, "adapter", 0.97 if declared else 0.9, "adapter"))

    def _adapter_base_by_weights(self, fp: Fingerprint) -> str | None:
        names = {t.name: t for t in fp.tensors}
        for gv in self.vectors_.values():
            delta = np.zeros(gv.U.shape[1])
            members = [self.fps_[i] for i in gv.ids]
            hit = _delta_vector(gv, members, names)
            if hit is None:
                continue
            delta = hit
            # base p with U_p ≈ U_c − Δ for some merged model c
            best = None
            for ci in range(len(gv.ids)):
                target = gv.U[ci] - delta
                d = np.linalg.norm(gv.U - target, axis=1)
                d[ci] = np.inf
                pi = int(np.argmin(d))
                scale = cast("float | np.floating", max(np.linalg.norm(delta), 1e-12))  # max() loses numpy's type
                if d[pi] < 0.05 * scale and (best is None or d[pi] < best[0]):
                    best = (d[pi], gv.ids[pi])
            if best:  # a byte-identical copy of the base (an ONNX export) matches as well: name the original
                return next((e.parent for e in self.edges_ if e.relation == "duplicate" and e.child == best[1]), best[1])
        return None

    # -- output ---------------------------------------------------------------------------------------
    def _build_graph(self, fingerprints: Sequence[Fingerprint], settled: set[tuple[str, str]]) -> ModelGraph:
        graph = ModelGraph()
        for f in fingerprints:
            graph.add_model(f.id, f.format, f.parameters,
                            **({"declared_base_model": f.declared.base_model} if f.declared.base_model else {}))
        tree_edges = [e for e in self.edges_ if e.kind == "tree" and e.relation == "finetune" and (e.parent, e.child) not in settled]
        maybe = low_rank_candidates(self.fps_, tree_edges) if self.classify else set()
        for e in self.edges_:
            if id(e) in maybe:
                try:
                    kind = verdict(relate(self.fps_[e.parent], self.fps_[e.child])).kind
                except IncomparableError:  # linked through finite tensors the pair does not share by alignment
                    kind = "finetune"
                if kind in ("adapter", "pruned", "quantized"):
                    e.relation = kind
            conf = self.calibration_.apply(e)
            if graph.graph.has_edge(e.child, e.parent):
                continue
            graph.add_edge(e.parent, e.child, e.relation, conf)
        graph.notes = report_conflicts(graph, self.declared_, self.fps_)
        return graph


#: How many other members of its tree a model's root vote looks at (:meth:`GraphRecovery._root_costs`): all
#: of them in trees up to this size, evenly spaced ones in larger trees, so the vote costs O(n) per tree.
#: The vote is meant over every member; the sample only bounds the cost. What a smaller sample loses,
#: measured on ``model-j`` (trees of 201): 64 voters found 1 of its 3 roots, 128 and 256 found 2, as all 200.
ROOT_VOTES = 256

#: How many times ``neighbours`` of its most correlated models a model is checked against for a link
#: that joins two trees (:meth:`GraphRecovery._bridges`); only pairs across trees are kept, so a larger
#: value costs one wider neighbour query and never re-decides a tree.
BRIDGE_NEIGHBOURS = 3

#: Sketch correlation above which a pair across trees that is not ``related`` gets the full pair evidence
#: (:meth:`GraphRecovery._bridges`). It bounds the cost, the verdict decides: unrelated models of the
#: selection zoos correlate up to 0.135 (``lineage``) and are all "unrelated" by the verdict; the children of a
#: model that moved far in ``wild`` seed 3 correlate with it at 0.17-0.27 and are relatives by the verdict
#: (relative distance 0.52-0.75, against 1.04 and more for unrelated pairs).
BRIDGE_CHECK = 0.1

#: How many chance deviations (:func:`_chance_correlation`) a pair's correlation must exceed to get that
#: check: with ~N·30 pairs looked at, 5 deviations leave ~0.1 chance pairs in 10 000 models.
CHANCE_SDS = 5.0

#: Pairs per call of the direction features in a vote (bounds the memory of a large tree's vote).
VOTE_CHUNK = 1 << 15

#: Loose relative tolerance of the batched rank screen (looser than relate's, so it only over-selects).
SCREEN_RTOL = 1e-2

#: Matrices per edge looked at by the screen (a merged adapter changes most matrices by a low-rank update).
SCREEN_TENSORS = 4


#: Models of the nearest group a lone model is matched with by content for its note (each is an assignment
#: per matrix shape: cheap, but a group can hold thousands).
NEAR_CHECKED = 16


def integer_stored(fp: Fingerprint) -> bool:
    """Its matrices are stored as integers (int8 with scales, GGUF blocks; not float8, in which some bases are
    released and fine-tuned)."""
    return any(integer_bits(t.dtype) is not None for t in fp.tensors if t.is_matrix)


def _near_note(members: list[Fingerprint], nearest: list[Fingerprint], shared: int, size: int, related: float) -> dict[str, str]:
    """The note for a model alone in an architecture near another group
    (:func:`~ancestree.graph.vectors.near_architectures`); when its matrices, paired by content, correlate
    with one of that group's above ``related``, it says which: no edge (its confidence could not be
    calibrated), but what an auditor looks at next."""
    problem = (f"another architecture: {shared} of its {size} matrices are named and shaped as {nearest[0].id}'s, too "
               "few to compare the two (layers added, dropped or renumbered make another architecture), so it is "
               "linked to none of them")
    scored = [(content_correlation(members[0], other), other.id) for other in nearest[:NEAR_CHECKED]]
    (corr, pairs), best = max(scored, key=lambda x: -1.0 if x[0][0] != x[0][0] else x[0][0])
    if corr == corr and corr > related:
        problem += (f"; paired by content instead, its matrices match {best}'s (median correlation {corr:.2f} over "
                    f"{pairs}): probably made from it with layers dropped or renumbered")
    return {"model": members[0].id, "problem": problem}


def _cycle(edges: list[tuple[int, int]]) -> set[int]:
    """The nodes of one directed cycle of ``edges`` (empty when there is none)."""
    import networkx as nx

    try:
        return {u for u, _ in nx.find_cycle(nx.DiGraph(edges))}
    except nx.NetworkXNoCycle:
        return set()


def low_rank_candidates(fps: dict[str, Fingerprint], edges: list[Edge]) -> set[int]:
    """``id()`` of the edges whose differences may be low-rank (merged adapters), screened in batches.

    Exact pair evidence (:func:`ancestree.relate.relate`, one SVD per matrix) decides the relation; this
    screen runs one batched SVD per tensor over all edges so that evidence is computed only where a
    low-rank difference is possible. Edges whose tensors do not pair by name are always passed on. Only
    matrices that changed are looked at: an adapter on the attention projections leaves the embeddings and
    MLPs that come first in a Llama's tensor list untouched.
    """
    by_tensor: dict[tuple[str, tuple[int, ...]], list[tuple[int, np.ndarray]]] = defaultdict(list)
    low: dict[int, list[bool]] = defaultdict(list)
    out: set[int] = set()
    for k, e in enumerate(edges):
        fa, fb = fps[e.parent], fps[e.child]
        shared = [t.name for t in fa.tensors if t.is_matrix and t.name in fb and fb[t.name].sketch.shape == t.sketch.shape
                  and min(t.sketch.shape) >= 16 and comparable_pair(t, fb[t.name]) and fb[t.name].digest != t.digest]
        if not shared:
            out.add(id(e))
            continue
        for name in shared[:SCREEN_TENSORS]:
            by_tensor[(name, fa[name].sketch.shape)].append((k, fb[name].sketch.astype(np.float64) - fa[name].sketch))
    for (_, shape), items in by_tensor.items():
        s = np.linalg.svd(np.stack([d for _, d in items]), compute_uv=False)
        ranks = (s > SCREEN_RTOL * np.maximum(s[:, :1], 1e-30)).sum(axis=1)
        for (k, _), r, top in zip(items, ranks, s[:, 0]):
            if top > 0:
                low[k].append(bool(r <= low_rank_limit(min(shape))))
    for k, flags in low.items():
        if flags and np.mean(flags) >= 0.5:
            out.add(id(edges[k]))
    return out


def _delta_vector(gv: GroupVectors, members: list[Fingerprint], deltas: dict) -> np.ndarray | None:
    """The adapter's weight difference laid out like the group's ``U`` vectors (None: other architecture)."""
    from ancestree.graph.vectors import _positions

    ref = members[0]
    out = np.zeros(gv.U.shape[1])
    offset, T, found = 0, len(gv.names), 0
    med = np.median(np.exp(np.where(gv.matched, gv.log_rms, np.nan)), axis=0)
    for j, name in enumerate(gv.names):
        t = next((m[name] for m in members if name in m), None) if name not in ref else ref[name]
        size = len(_positions(t.sketch.size)) if t is not None else 0
        if t is not None and name in deltas and deltas[name].sketch.shape == t.sketch.shape:
            w = 1.0 / np.sqrt(max(size, 1) * T)
            out[offset:offset + size] = deltas[name].sketch.reshape(-1)[_positions(t.sketch.size)] * (w / max(med[j], 1e-30))
            found += 1
        offset += size
    return out if found else None


def _chance_correlation(gv: GroupVectors) -> float:
    """Standard deviation of the mean sketch correlation of two independent models: each tensor's
    correlation over ``m`` sampled entries has deviation ``1/√m``, and the mean over ``T`` tensors
    ``√(Σ 1/m) / T``."""
    widths = np.diff(gv.offsets)
    widths = widths[widths > 0]
    return float(np.sqrt(np.sum(1.0 / widths)) / len(widths)) if len(widths) else 1.0


def _confirm_by_evidence(members: list[Fingerprint], pairs: np.ndarray, related: np.ndarray, check: np.ndarray) -> None:
    """Set ``related`` (in place) for the pairs marked in ``check`` that the full pair evidence calls relatives
    (:func:`~ancestree.relate.shares_weights`, without the per-matrix SVDs)."""
    for k in np.flatnonzero(check):
        related[k] = shares_weights(members[int(pairs[k, 0])], members[int(pairs[k, 1])], ranks=False)


def _components(pairs: np.ndarray, n: int) -> np.ndarray:
    """Connected-component label of each of ``n`` rows linked by ``pairs``."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


#: Which file of a duplicate class is most likely the original (formats of :mod:`ancestree.io`): the
#: training frameworks' own formats first, then exports; ``peft`` adapters and ``zip:<inner>`` archives too.
FORMAT_RANK = {"safetensors": 0, "pytorch": 1, "peft": 2, "npz": 3, "onnx": 4, "gguf": 5}


def _original_rank(fp: Fingerprint) -> tuple:
    """Which copy of duplicates carries the family's edges, from the files alone: safetensors first, then
    the oldest, then the id."""
    fmt = fp.format.removeprefix("zip:")  # a zipped folder ranks like what it holds, after it
    fmt_rank = FORMAT_RANK.get(fmt, len(FORMAT_RANK)) + (0.5 if fp.format.startswith("zip:") else 0.0)
    return (fmt_rank, fp.declared.mtime, fp.id)


__all__ = ["Edge", "GraphRecovery"]
