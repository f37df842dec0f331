"""A small flagged dataset for the review tests: known scores, a long pair, a `<script>` pair.

Dataset "rev": 30 train pairs + 4 test pairs. `length_ratio` flags train pairs 0..23 with score
= 24 - i (pair 0 most suspect); `oof_margin` flags pairs 20..29 (score 1 - sigmoid(margin), reason
naming the margin, as the real detector writes it). Pair 0 carries `<script>alert(1)</script>` in
its prompt and replies; pair 1 has a long multi-turn context and a long chosen reply.
"""

from __future__ import annotations

import math

import numpy as np

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.source_result import SourceResult
from rewardlab.store.records import DetectorResult
from rewardlab.store.store import Store

XSS = "<script>alert(1)</script>"
N_TRAIN = 30
LENGTH_FLAGGED = 24
OOF_FLAGGED = range(20, 30)


def seed_pairs() -> list[PreferencePair]:
    pairs = []
    for i in range(N_TRAIN):
        prompt, chosen, rejected, context = (f"Question {i}: how do I do thing {i}?",
                                             f"Helpful answer {i}.", f"Unhelpful reply {i}.", "")
        if i == 0:
            prompt = f"Tell me about {XSS} please"
            chosen, rejected = f"{XSS} is a tag", f"<b>bold</b> {XSS}"
        if i == 1:
            context = "\n\n".join(f"Human: turn {t} question\n\nAssistant: turn {t} answer"
                                  for t in range(6))
            chosen = " ".join(f"word{w}" for w in range(600))  # ~5,000 characters: folded
        pairs.append(PreferencePair(source_index=i, split="train", subset="harmless-base",
                                    prompt=prompt, chosen=chosen, rejected=rejected,
                                    context=context))
    pairs += [PreferencePair(source_index=i, split="test", subset="harmless-base",
                             prompt=f"Test {i}?", chosen="Yes.", rejected="No.")
              for i in range(4)]
    return pairs


def _run(detector: str, scores: list[float], flagged: list[bool], reasons: list[str]
         ) -> DetectorResult:
    return DetectorResult(detector=detector, scores=np.array(scores), flagged=np.array(flagged),
                          reasons=reasons, threshold=0.5, threshold_kind="fixed", params={})


def seed_store(store: Store, name: str = "rev") -> list[int]:
    """Ingest the pairs and save both detector runs; returns the train example ids by index."""
    store.ingest(name, SourceResult(spec="seed", pairs=seed_pairs(), read=N_TRAIN + 4,
                                    rejected=[]))
    train = store.load_pairs(name, split="train")
    ids = [int(p.example_id or 0) for p in train]
    length = [float(LENGTH_FLAGGED - i) if i < LENGTH_FLAGGED else 0.0 for i in range(N_TRAIN)]
    store.save_detector_run(name, _run(
        "length_ratio", length, [i < LENGTH_FLAGGED for i in range(N_TRAIN)],
        [f"chosen reply {LENGTH_FLAGGED - i}x longer" if i < LENGTH_FLAGGED else ""
         for i in range(N_TRAIN)]), ids)
    margins = [-(i - 19) * 0.5 if i in OOF_FLAGGED else 2.0 for i in range(N_TRAIN)]
    prob = [1 / (1 + math.exp(-m)) for m in margins]
    store.save_detector_run(name, _run(
        "oof_margin", [1 - p for p in prob], [i in OOF_FLAGGED for i in range(N_TRAIN)],
        [f"out-of-fold model (fold 0) prefers the rejected reply: P(chosen better) = {p:.2f}, "
         f"margin {m:+.2f}; estimated flip rate 30.0%" if i in OOF_FLAGGED else ""
         for i, (p, m) in enumerate(zip(prob, margins))]), ids)
    return ids
