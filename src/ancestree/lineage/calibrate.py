"""Learn a method's calibration (softmax temperature, "none of these" score) from labelled tasks.

A task is the scores a method gave the candidates of one child and the index of the true parent among
them, or ``None`` when the true parent was left out. The calibration maximises the likelihood of the
right answer (a parent, or "none") under the softmax with the virtual none candidate; a grid search is
enough for two parameters and never fails to converge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ancestree.lineage.result import Calibration

Task = tuple[Sequence[float], int | None]


def log_likelihood(tasks: Sequence[Task], calibration: Calibration) -> float:
    total = 0.0
    for scores, truth in tasks:
        logits = np.append(np.asarray(scores, dtype=np.float64), calibration.none_score) / calibration.temperature
        top = logits.max()
        log_z = top + np.log(np.exp(logits - top).sum())
        total += logits[-1 if truth is None else truth] - log_z
    return float(total)


def fit_calibration(tasks: Sequence[Task], temperatures: Sequence[float] | None = None) -> Calibration:
    """The (temperature, none score) of highest likelihood on ``tasks``.

    Candidate none scores are midpoints between observed best scores, so the threshold lands in the gap
    between "parent present" and "parent removed" tasks when there is one.
    """
    tasks = [(list(s), t) for s, t in tasks if len(s)]
    if not tasks:
        raise ValueError("no tasks to calibrate on")
    best = np.sort(np.unique([max(s) for s, _ in tasks]))
    thresholds = np.concatenate([[best[0] - 1.0], (best[:-1] + best[1:]) / 2, [best[-1] + 1.0]])
    if len(thresholds) > 200:
        thresholds = np.quantile(thresholds, np.linspace(0, 1, 200))
    temperatures = temperatures or list(np.geomspace(0.01, 10.0, 31))
    scored = ((log_likelihood(tasks, Calibration(t, float(b))), t, float(b)) for t in temperatures for b in thresholds)
    _, t, b = max(scored, key=lambda x: x[0])
    return Calibration(temperature=float(t), none_score=b)


def fit_choice_model(tasks: Sequence[tuple[np.ndarray, int | None]], l2: float = 1e-2,
                     init: Sequence[float] | None = None, none: bool = True) -> tuple[np.ndarray, float]:
    """A conditional-logit choice model: coefficients ``w`` and a none bias ``b`` such that
    ``softmax([F·w, b])`` puts its mass on the true parent (or on "none") for each task ``(F, truth)``.

    ``F`` holds one row of features per candidate. Fitted by L-BFGS on the mean negative log-likelihood
    with a small L2 penalty (the problem is convex, so the optimum is unique). With ``none=False`` only
    tasks whose parent is present are used and there is no none option (a pure ranking model; ``b`` is 0).
    """
    import torch

    tasks = [(np.asarray(f, dtype=np.float64), t) for f, t in tasks if len(f) and (none or t is not None)]
    if not tasks:
        raise ValueError("no tasks to fit on")
    k = tasks[0][0].shape[1]
    w = torch.tensor(np.asarray(init if init is not None else np.zeros(k)), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=none)
    feats = [torch.from_numpy(f) for f, _ in tasks]
    targets = [len(f) if t is None else t for f, t in tasks]
    opt = torch.optim.LBFGS([w, b] if none else [w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = sum(-torch.log_softmax(torch.cat([f @ w, b]) if none else f @ w, 0)[t] for f, t in zip(feats, targets)) / len(feats)
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().copy(), float(b.detach())
