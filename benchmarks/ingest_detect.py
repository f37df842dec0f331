"""Benchmark: ingest 160,000 generated HH-shaped pairs and run every rule detector but the embedding one.

Targets (issue 2): ingest < 30 s on SQLite, detectors < 60 s. Runs on SQLite and, when a PostgreSQL
URL is given (--pg URL or $REWARDLAB_TEST_PG_URL), on PostgreSQL too.

    .venv/bin/python benchmarks/ingest_detect.py [--pairs 160000] [--pg postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the a to of and you can how what is it that for on with this I not be are your do we "
         "would like help make good bad people time know think want need should could really "
         "maybe sure sorry please thanks question answer problem idea way day thing").split()


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def write_pairs(path: Path, n: int, seed: int = 0) -> None:
    """HH-RLHF-format rows: 1–3 turns of context, a prompt, two replies; ~3% exact repeats."""
    rng = random.Random(seed)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        previous: list[str] = []
        for _ in range(n):
            if previous and rng.random() < 0.03:
                f.write(rng.choice(previous))
                continue
            history = "".join(f"\n\nHuman: {_sentence(rng, 4, 12)}\n\nAssistant: "
                              f"{_sentence(rng, 5, 20)}" for _ in range(rng.randint(0, 2)))
            head = f"{history}\n\nHuman: {_sentence(rng, 4, 14)}\n\nAssistant: "
            line = json.dumps({"chosen": head + _sentence(rng, 3, 40),
                               "rejected": head + _sentence(rng, 3, 40)}) + "\n"
            f.write(line)
            previous = (previous + [line])[-100:]


def bench(url: str, path: Path, detectors: list[str]) -> dict[str, float]:
    from rewardlab.data.sources import read_source
    from rewardlab.flags.flagging import flag_dataset
    from rewardlab.store.store import Store

    store = Store(url)
    t0 = time.perf_counter()
    source = read_source(str(path), test_fraction=0.1)
    t1 = time.perf_counter()
    counts = store.ingest("bench", source)
    t2 = time.perf_counter()
    again = store.ingest("bench", source)
    t3 = time.perf_counter()
    results = flag_dataset(store, "bench", detectors=detectors, progress=False)
    t4 = time.perf_counter()
    per_detector = {r.detector: round(r.seconds, 2) for r in results}
    return {"read_s": t1 - t0, "ingest_s": t2 - t1, "ingested": counts.ingested,
            "reingest_s": t3 - t2, "reingest_added": again.ingested,
            "detectors_s": t4 - t3, "detector_compute_s": sum(r.seconds for r in results),
            "per_detector_s": per_detector}


def main() -> int:
    from rewardlab.flags.detectors import RULE_DETECTORS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=160_000)
    parser.add_argument("--pg", default=os.environ.get("REWARDLAB_TEST_PG_URL"))
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    detectors = [d for d in RULE_DETECTORS if d != "near_duplicate_responses"]
    out: dict[str, object] = {"pairs": args.pairs, "detectors": detectors}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl.gz"
        write_pairs(path, args.pairs)
        out["sqlite"] = bench(f"sqlite:///{tmp}/bench.db", path, detectors)
        if args.pg:
            from sqlalchemy import create_engine, make_url, text

            admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text("DROP DATABASE IF EXISTS rewardlab_bench"))
                c.execute(text("CREATE DATABASE rewardlab_bench"))
            admin.dispose()
            pg_url = make_url(args.pg).set(database="rewardlab_bench").render_as_string(
                hide_password=False)
            out["postgresql"] = bench(pg_url, path, detectors)
    for backend in ("sqlite", "postgresql"):
        if backend in out:
            r = out[backend]
            print(f"{backend:>10}: read {r['read_s']:.1f} s, ingest {r['ingest_s']:.1f} s "
                  f"({r['ingested']:,} pairs), re-ingest {r['reingest_s']:.1f} s "
                  f"(+{r['reingest_added']}), detectors {r['detectors_s']:.1f} s "
                  f"(compute {r['detector_compute_s']:.1f} s)")
            print(f"{'':>10}  per detector: {r['per_detector_s']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
