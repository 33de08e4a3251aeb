"""Probe inputs for the data-based methods: a user's ``.npy``/``.npz``, or data made for the model.

A user file is checked against the model's input shape and refused with a one-line message naming the
file when it does not fit. Without a file, zoo models get the zoo's own images (the domains named in the
model card's ``datasets``, else both) and token models get seeded random token ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ancestree.errors import DAMAGED_FILE, BadInputError
from ancestree.io.npz import read_npz
from ancestree.lineage.runnable import Runnable

#: Probe inputs used when none are given (the paper uses about 64).
DEFAULT_COUNT = 64

#: Fewest probe inputs a centred statistic can use. Linear CKA (the ``cka`` metrics) and the detector's Gram
#: matrices centre the features over the inputs: one input centres to nothing (every score the same), two to
#: a vector and its negative, whose CKA with any other model's features is exactly 1.
MIN_CENTRED = 3

#: Fewer user probe inputs than this and a ranking is unreliable, so it carries a warning. Measured on the
#: tests' MLP family (penultimate features of 48 units, 20 draws each): the linear CKA of a child with its
#: parent and with an unrelated model overlap within one standard deviation up to 16 inputs (0.79±0.05 vs
#: 0.73±0.06), and features of unrelated inputs still reach CKA 0.22 at 16 (0.12 at 32, 0.07 at 64); from 32
#: the parent stands about two deviations apart. The detector trains on 32 and the paper uses about 64.
RELIABLE_COUNT = 32

#: Names looked for in an ``.npz`` (else its first array).
NPZ_KEYS = ("x", "inputs", "X", "images", "input_ids")


def read_probe_file(path: str | Path) -> np.ndarray:
    """The array in a ``.npy`` or ``.npz`` file (pickles refused)."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(path, "probe data: " + ("a folder, not a .npy/.npz file" if p.is_dir() else "no such file"))
    try:
        if p.suffix == ".npz":
            with read_npz(p) as data:
                key = next((k for k in NPZ_KEYS if k in data.files), data.files[0] if data.files else None)
                if key is None:
                    raise BadInputError(path, "probe data: the .npz holds no array")
                return np.asarray(data[key])
        if p.suffix == ".npy":
            return np.asarray(np.load(p, allow_pickle=False))
    except DAMAGED_FILE as exc:  # an empty file raises EOFError, a truncated .npz BadZipFile
        if "allow_pickle" in str(exc):  # numpy's own advice is to load it unsafely: not for an untrusted file
            raise BadInputError(path, "probe data: not a numeric array (it would need unpickling, which ancestree never does "
                                      "to a data file: save the inputs with numpy.save of a numeric array)") from None
        raise BadInputError(path, f"probe data: cannot read ({exc.__class__.__name__}: {str(exc) or 'empty or cut short'})") from None
    raise BadInputError(path, f"probe data must be .npy or .npz, not {p.suffix or 'a file without extension'}")


#: Largest input value taken (images are scaled to about [-3, 3]; pixels as 0-255 floats still pass): beyond,
#: the outputs of any network overflow float32 and the error would name the model, not the data.
MAX_INPUT = 1e4

#: ``config.json`` keys giving how many positions a text model takes (BERT and Llama; GPT-2).
POSITION_KEYS = ("max_position_embeddings", "n_positions")

#: Model types whose position ids start after the padding index (RoBERTa's family).
PADDED_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text",
                              "roberta-prelayernorm", "xmod", "mpnet", "esm", "ibert", "luke", "lilt", "markuplm",
                              "bridgetower", "altclip", "clap"})


def check_probe(array: np.ndarray, runnable: Runnable, path: str | Path | None) -> torch.Tensor:
    """The probe inputs as a tensor, or :class:`BadInputError` when they do not fit ``runnable``."""
    expected = runnable.input_shape
    if runnable.takes_images:
        fits = array.ndim == len(expected) + 1 and all(e in (-1, a) for e, a in zip(expected, array.shape[1:]))
        if not fits or len(array) == 0 or (array.ndim > 1 and 0 in array.shape[1:]):
            raise BadInputError(path, f"probe data has shape {tuple(array.shape)}; {runnable.id} takes inputs of "
                                      f"shape (N, {', '.join('any' if d == -1 else str(d) for d in expected)})")
        if not np.issubdtype(array.dtype, np.floating):  # uint8 pixels 0-255 ran, and changed the answer
            raise BadInputError(path, f"probe data must be floating-point inputs scaled as the model's training data "
                                      f"(the zoo's images are float32), not {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise BadInputError(path, "probe data holds NaN or infinite values")
        largest = float(np.abs(array).max())
        if largest > MAX_INPUT:  # the outputs overflow, and the model's weights were blamed
            raise BadInputError(path, f"probe data holds values up to {largest:.3g}; inputs scaled as the model's "
                                      f"training data are expected (at most {MAX_INPUT:g} here)")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    vocab = int(runnable.config.get("vocab_size", 0)) or None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer) or len(array) == 0:
        raise BadInputError(path, f"probe data has shape {tuple(array.shape)} and dtype {array.dtype}; {runnable.id} "
                                  "takes token ids of shape (N, length), integers")
    if array.shape[1] == 0:
        raise BadInputError(path, f"probe data holds rows of no tokens (shape {tuple(array.shape)})")
    positions = next((int(runnable.config[k]) for k in POSITION_KEYS if isinstance(runnable.config.get(k), int)), None)
    if positions and runnable.config.get("model_type") in PADDED_POSITIONS:
        # their positions are numbered from after the padding index: max_position_embeddings − (pad + 1) tokens
        pad = runnable.config.get("pad_token_id")
        positions -= (1 if pad is None else int(pad)) + 1
    if positions and array.shape[1] > positions:
        raise BadInputError(path, f"probe data rows are {array.shape[1]} tokens long; {runnable.id} takes at most {positions}")
    if vocab and (array.min() < 0 or array.max() >= vocab):
        raise BadInputError(path, f"probe data holds token ids outside [0, {vocab}) of {runnable.id}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def default_probe(runnable: Runnable, card: dict | None = None, count: int = DEFAULT_COUNT, seed: int = 0) -> torch.Tensor:
    """Probe inputs made for ``runnable`` when the user gave none."""
    rng = np.random.default_rng(seed)
    if runnable.kind == "zoo":
        from ancestree.zoo.data import DOMAINS, class_names, make_dataset

        named = [str(d).split("/")[-1] for d in (card or {}).get("datasets", [])]
        domains = [d for d in named if d in DOMAINS] or list(DOMAINS)
        per_domain = max(1, count // len(domains))
        images = []
        for domain in domains:
            names = class_names(domain)
            classes = [names[i] for i in rng.choice(len(names), size=min(per_domain, len(names)), replace=False)]
            x, _ = make_dataset(domain, classes, max(1, per_domain // len(classes)), seed)
            images.append(x[:per_domain])
        return torch.from_numpy(np.concatenate(images)[:count])
    if runnable.takes_images:  # a Hugging Face vision model: normalised pixels, as its processors give them
        shape = tuple(224 if d == -1 else d for d in runnable.input_shape)
        return torch.from_numpy(rng.standard_normal((count, *shape)).astype(np.float32))
    vocab = int(runnable.config.get("vocab_size", 1000))
    return torch.from_numpy(rng.integers(0, vocab, size=(count, 16)).astype(np.int64))


def probe_inputs(runnable: Runnable, probe_data: str | Path | np.ndarray | None, card: dict | None = None) -> torch.Tensor:
    """Probe inputs for ``runnable``: from ``probe_data`` (a path or array) if given, else made."""
    if probe_data is None:
        return default_probe(runnable, card)
    if isinstance(probe_data, np.ndarray):
        return check_probe(probe_data, runnable, None)
    return check_probe(read_probe_file(probe_data), runnable, probe_data)


def probe_count(probe_data: str | Path | np.ndarray | None) -> int | None:
    """How many inputs the user's probe data holds (None when none was given: inputs are then made)."""
    if probe_data is None:
        return None
    array = probe_data if isinstance(probe_data, np.ndarray) else read_probe_file(probe_data)
    return len(array) if array.ndim else 0


def require_inputs(probe_data: str | Path | np.ndarray | None, needed: int, what: str) -> None:
    """Refuse user probe data with fewer than ``needed`` inputs for ``what`` (named in the one-line message)."""
    n = probe_count(probe_data)
    if n is not None and n < needed:
        path = None if isinstance(probe_data, np.ndarray) else probe_data
        raise BadInputError(path, f"probe data has {n} input{'' if n == 1 else 's'}; {what} needs at least {needed} "
                                  "(it centres the features over the inputs: fewer leave every model alike)")


def small_probe_note(probe_data: str | Path | np.ndarray | None, used: int | None = None) -> tuple[str, str] | None:
    """``(file, problem)`` when the user's probe data is too small for a reliable ranking (:data:`RELIABLE_COUNT`,
    or ``used``, the inputs a method takes at the most, when fewer); None otherwise."""
    n = probe_count(probe_data)
    enough = RELIABLE_COUNT if used is None else min(used, RELIABLE_COUNT)
    if n is None or n >= enough:
        return None
    name = "probe data" if isinstance(probe_data, np.ndarray) else str(probe_data)
    return name, (f"only {n} probe input{'' if n == 1 else 's'}: with fewer than {enough} the ranking is unreliable "
                  "(feature similarities of unrelated models overlap the parent's)")
