"""Benchmark: 20 real A/A experiments; how many verdicts claim a difference where there is none?

Each experiment trains the same synthetic data twice, `unfiltered` and `aa` (unfiltered again with
independent seeds), with the `bow` backbone and 3 seeds, through the real CLI:

    rewardlab compare --train synthetic:n=600,noise=0.1,seed=S --model bow \\
        --conditions unfiltered,aa --seeds 3 -o OUT/S --db sqlite:///OUT/S.db

and counts the verdicts that claim a difference (`evaluation.verdict.claims_difference`: a test
whose 95% CI excludes 0 and survives Holm). Nothing differs but the seeds, so a calibrated test
claims one in about 5% of experiments: at most 2 of 20 (issue 29's acceptance; P(Bin(20, 0.05)
≤ 2) = 0.92 for an exactly calibrated test).

    .venv/bin/python benchmarks/aa_control.py [--runs 20] [--out /tmp/aa] [--json FILE]
        [--detectors length_ratio]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_one(seed: int, out: Path, rewardlab: str, detectors: str | None) -> dict[str, Any]:
    """One A/A experiment through the CLI (kept when its results.json exists: a rerun resumes);
    its A/A comparison and whether the verdict claims a difference."""
    from rewardlab.evaluation.stats import compare_runs, correct_for_multiplicity
    from rewardlab.evaluation.verdict import claims_difference

    target = out / str(seed)
    cmd = [rewardlab, "compare", "--train", f"synthetic:n=600,noise=0.1,seed={seed}",
           "--model", "bow", "--conditions", "unfiltered,aa", "--seeds", "3",
           "-o", str(target), "--db", f"sqlite:///{out}/{seed}.db", "--json"]
    cmd += ["--detectors", detectors] if detectors else []
    started = time.perf_counter()
    if not (target / "results.json").exists():
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    results = json.loads((target / "results.json").read_text())
    # the statistics are pure functions of the stored runs: recomputed with this checkout's code,
    # so a results.json written by an earlier version counts with the current test
    runs = {c: results["conditions"][c]["runs"] for c in ("aa", "unfiltered")}
    comp = compare_runs("aa", runs["aa"], "unfiltered", runs["unfiltered"])
    results["comparisons"] = [comp]
    results["multiplicity"] = correct_for_multiplicity(results)
    test = comp["test"]
    return {"seed": seed, "diff": test["diff"], "ci": test["ci"], "p": test["p"],
            "df": test["df"], "var_seeds": test["var_seeds"],
            "accuracy": {c: b["summary"]["accuracy_mean"]
                         for c, b in results["conditions"].items()},
            "claims_difference": claims_difference(results),
            "seconds": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="experiments, data seeds 1..RUNS")
    parser.add_argument("--out", default="/tmp/aa", help="folder for the reports and databases")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--detectors", default=None, help=(
        "compare's --detectors (default: its clean set); with no clean condition they train "
        "nothing, so e.g. length_ratio gives the same A/A numbers in less time"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rewardlab = str(Path(sys.executable).with_name("rewardlab"))
    rows = []
    for seed in range(1, args.runs + 1):
        rows.append(run_one(seed, out, rewardlab, args.detectors))
        r = rows[-1]
        print(f"S={seed:>2}: aa − unfiltered {100 * r['diff']:+.2f} points "
              f"[{100 * r['ci'][0]:+.2f}, {100 * r['ci'][1]:+.2f}], p = {r['p']:.3f}, "
              f"claims a difference: {r['claims_difference']} ({r['seconds']:.0f} s)", flush=True)
    claims = sum(r["claims_difference"] for r in rows)
    print(f"{claims} of {len(rows)} A/A verdicts claim a difference (acceptance: at most 2)")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "claims": claims}, indent=2) + "\n")
    return 0 if claims <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
