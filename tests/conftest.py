"""Shared fixtures: small real model files written per test (never committed weights)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file


#: Debian's chromium, driven by Playwright (never `playwright install`), for the tests of the pages.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium_page() -> Iterator[tuple[Any, list[str]]]:
    """A 1200×720 page in headless Chromium and the list its uncaught script errors are added to."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            browser.close()


def write_hf_folder(folder: Path, tensors: dict[str, np.ndarray], card: dict | None = None) -> Path:
    """A Hugging Face style model folder with ``config.json``, safetensors weights and an optional card."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "test"}))
    if card:
        lines = "".join(f"{k}: {v}\n" for k, v in card.items())
        (folder / "README.md").write_text(f"---\n{lines}---\n# test model\n")
    return folder


def small_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "layer.0.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "layer.0.bias": rng.standard_normal(16).astype(np.float32),
        "layer.1.weight": rng.standard_normal((4, 16)).astype(np.float32),
        "position_ids": np.arange(10, dtype=np.int64),
    }


@pytest.fixture
def hf_model(tmp_path: Path) -> Path:
    return write_hf_folder(tmp_path / "model", small_tensors(), {"base_model": "org/base"})


@pytest.fixture(scope="session")
def tiny_zoo_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The ``tiny`` zoo, built once per test session with 2 workers: (folder, seconds it took)."""
    import time

    from ancestree.zoo import make_zoo

    out = tmp_path_factory.mktemp("zoo") / "tiny"
    start = time.perf_counter()
    make_zoo(out, "tiny", seed=0, workers=2)
    return out, time.perf_counter() - start


@pytest.fixture(scope="session")
def tiny_zoo(tiny_zoo_build: tuple[Path, float]) -> Path:
    """Folder of the ``tiny`` zoo (``truth.json`` + one model folder per model); do not modify it."""
    return tiny_zoo_build[0]


@pytest.fixture(scope="session")
def tiny_atlas(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An atlas index (SQLite file) of the ``tiny`` zoo, built in two ``index add`` batches; do not modify it."""
    from ancestree.index import Atlas
    from ancestree.io import scan_models

    db = tmp_path_factory.mktemp("atlas") / "tiny.db"
    items = sorted((name, str(path)) for name, path in scan_models(tiny_zoo))  # named as `tree --scan` names them
    with Atlas(db) as atlas:  # the second batch is placed incrementally into the first one's graph
        atlas.add(items[: len(items) // 2])
        atlas.add(items[len(items) // 2 :])
    return db
