"""Serving load test: `rewardlab serve` vs a naive FastAPI endpoint, same model, on loopback.

N concurrent clients each send M `/get_reward` requests (OpenRLHF's shape: one query per request
by default, prompt + response as one HH dialogue from the harmless sample, so realistic lengths).
Two servers, each in its own process (clean peak RSS), interleaved rep by rep (the order swaps every
rep), so load drifts on this shared machine hit both alike:

  rewardlab  `rewardlab serve DIR` as a user runs it: dynamic micro-batching (one queue, length-
             sorted batches of up to --max-batch sequences, --max-wait-ms), inference_mode, one
             scoring thread.
  rewardlab-w2  the same with `--workers 2`: two batches at once, one intra-op thread each on
             this 2-core CPU (opt-in with --servers).
  naive      the common recipe (OpenRLHF's `serve_rm.py` shape): an `async def` FastAPI endpoint
             that tokenizes and runs one transformers forward per request under `no_grad`.

Same model for both: MiniLM (`minilm_path()`) with a fresh 1-label head, saved once. Reported per
server: requests/s, responses/s (rewards returned per second), p50/p99 latency, peak RSS (VmHWM of
the server process), the 1-minute load average around each run; per rep the ratio of responses/s;
and whether both servers gave the same rewards for the same queries.

    .venv/bin/python benchmarks/serve_load.py                        # 32 clients x 8 requests, 3 reps
    .venv/bin/python benchmarks/serve_load.py --clients 8 --requests 4 --reps 1   # a quick look
"""

# no `from __future__ import annotations`: FastAPI must see the naive endpoint's `Request`
# annotation as the class (it is imported inside `run_naive_server`), not as a string
import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from rewardlab.training.train_config import PRECISIONS  # torch-free (the CLI builds flags from it)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-sample.jsonl.gz"
# rewardlab-w2: --workers 2; -fp32 / -bf16: that precision instead of `auto` (bf16 where the CPU or
# GPU has it natively, else fp32; /info says which ran); naive-bf16: the naive server's weights in
# bf16 (OpenRLHF's `serve_rm.py --bf16`)
SERVERS = ("rewardlab", "naive", "rewardlab-w2", "rewardlab-fp32", "naive-bf16")


# --- the naive baseline (runs in its own process: `serve_load.py --naive-server DIR PORT`) ----------
def run_naive_server(model_dir: str, port: int, max_length: int, bf16: bool) -> None:
    import torch
    import uvicorn
    from fastapi import FastAPI, Request
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if bf16 else torch.float32
    # the GPU where there is one (benchmarks/gpu_bench.py), as `rewardlab serve` takes it
    device = (torch.accelerator.current_accelerator() if torch.accelerator.is_available()
              else torch.device("cpu"))
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype).to(device)
    model.eval()
    app = FastAPI()
    marker = "\n\nAssistant:"

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {"serving": {"precision": "bf16" if bf16 else "fp32"}}

    @app.post("/get_reward")
    async def get_reward(request: Request) -> dict[str, Any]:
        queries = (await request.json())["query"]
        cuts = [q.rfind(marker) for q in queries]
        prompts = [q[:c].strip() for q, c in zip(queries, cuts)]
        responses = [q[c + len(marker):].strip() for q, c in zip(queries, cuts)]
        inputs = _naive_inputs(tok, prompts, responses, max_length).to(device)
        with torch.no_grad():  # one forward per request
            rewards = model(**inputs).logits[:, 0].float().tolist()
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _naive_inputs(tok: Any, prompts: list[str], responses: list[str], max_length: int) -> Any:
    """The text pair (encoders), or a decoder's chat template as the README's recipe renders it."""
    if not tok.chat_template:
        return tok(prompts, responses, truncation=True, max_length=max_length, padding=True,
                   return_tensors="pt")
    from rewardlab.models.input_rule import dialogue_messages

    texts = [tok.apply_chat_template(dialogue_messages(p, r), tokenize=False)
             for p, r in zip(prompts, responses)]
    return tok(texts, add_special_tokens=False, truncation=True, max_length=max_length,
               padding=True, return_tensors="pt")


# --- setup ----------------------------------------------------------------------------------------
def make_model(directory: Path, max_length: int, backbone: str = "minilm") -> Path:
    """MiniLM (or `backbone`, e.g. a decoder from train_throughput.py --make-decoder) with a fresh,
    seeded 1-label head, saved as a rewardlab checkpoint: a real-size model, as `rewardlab train`
    starts."""
    import torch

    from rewardlab.models.backbones import load_backbone
    from rewardlab.models.reward_model import RewardModel

    torch.manual_seed(0)
    model, tok = load_backbone(backbone, max_length=max_length, seed=0)
    info = {"config": {"model": backbone, "max_length": max_length}}
    return RewardModel(model, tok, max_length=max_length).save(directory, info=info)


def make_queries(n: int, seed: int) -> list[str]:
    """n HH dialogues (prompt + response, chosen or rejected) as a policy's /get_reward queries."""
    from rewardlab.data.sources import read_source

    pairs = read_source(str(SAMPLE) if SAMPLE.exists() else "hh-rlhf-sample").pairs
    texts = [f"\n\n{p.prompt_text}\n\nAssistant: {side}" for p in pairs
             for side in (p.chosen, p.rejected) if side.strip()]
    random.Random(seed).shuffle(texts)
    return [texts[i % len(texts)] for i in range(n)]


def start_server(kind: str, model_dir: Path, port: int, args: argparse.Namespace
                 ) -> subprocess.Popen[bytes]:
    if kind.startswith("rewardlab"):
        workers = "2" if kind == "rewardlab-w2" else str(args.workers)
        precision = kind.rsplit("-", 1)[1] if kind.endswith(("-fp32", "-bf16")) else args.precision
        cmd = [sys.executable, "-m", "rewardlab", "serve", str(model_dir), "--port", str(port),
               "--max-batch", str(args.max_batch), "--forward-batch", str(args.forward_batch),
               "--max-wait-ms", str(args.max_wait_ms), "--workers", workers,
               "--precision", precision]
    else:
        cmd = [sys.executable, __file__, "--naive-server", str(model_dir), str(port),
               "--max-length", str(args.max_length), *(["--naive-bf16"] if kind == "naive-bf16" else [])]
    env = {k: v for k, v in os.environ.items() if k != "REWARDLAB_TOKEN"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the load -------------------------------------------------------------------------------------
async def _client(http: Any, url: str, batches: list[list[str]], latencies: list[float],
                  rewards: dict[str, float]) -> None:
    for queries in batches:
        start = time.perf_counter()
        r = await http.post(f"{url}/get_reward", json={"query": queries})
        if r.status_code != 200:
            raise SystemExit(f"{url}/get_reward: HTTP {r.status_code}: {r.text[:300]}")
        latencies.append(time.perf_counter() - start)
        rewards.update(zip(queries, r.json()["rewards"]))


async def run_load(url: str, plan: list[list[list[str]]]) -> dict[str, Any]:
    """Each client sends its batches one after another; all clients at once."""
    import httpx

    latencies: list[float] = []
    rewards: dict[str, float] = {}
    limits = httpx.Limits(max_connections=len(plan), max_keepalive_connections=len(plan))
    async with httpx.AsyncClient(timeout=600.0, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(_client(http, url, b, latencies, rewards) for b in plan))
        seconds = time.perf_counter() - start
    n_requests = sum(len(b) for b in plan)
    n_responses = sum(len(q) for b in plan for q in b)
    lat = sorted(latencies)
    return {"seconds": seconds, "requests": n_requests, "responses": n_responses,
            "requests_per_s": n_requests / seconds, "responses_per_s": n_responses / seconds,
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))],
            "rewards": rewards}


def plan_for(queries: list[str], args: argparse.Namespace) -> list[list[list[str]]]:
    """clients × requests × queries_per_request, the same for both servers."""
    q, per = iter(queries), args.queries_per_request
    return [[[next(q) for _ in range(per)] for _ in range(args.requests)]
            for _ in range(args.clients)]


def measure(kind: str, model_dir: Path, plan: list[list[list[str]]], warmup: list[list[list[str]]],
            args: argparse.Namespace) -> dict[str, Any]:
    from rewardlab.web.server import base_url, free_port, wait_healthy

    port = free_port()
    url = base_url("127.0.0.1", port)
    proc = start_server(kind, model_dir, port, args)
    try:
        wait_healthy(url, proc, timeout=300.0)
        with urllib.request.urlopen(f"{url}/info", timeout=30) as r:
            precision = json.load(r)["serving"]["precision"]
        asyncio.run(run_load(url, warmup))  # first forwards, kernel caches, connections
        load_before = os.getloadavg()[0]
        result = asyncio.run(run_load(url, plan))
        result |= {"server": kind, "precision": precision, "load_before": load_before,
                   "load_after": os.getloadavg()[0], "peak_rss_mb": peak_rss_mb(proc.pid)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


# --- summary ----------------------------------------------------------------------------------------
def agreement(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Max |reward difference| between rewardlab in fp32 and the naive server on the same queries
    (a check, not a speed)."""
    fp32 = [k for k in ("rewardlab", "rewardlab-fp32") if any(
        r["server"] == k and r["precision"] == "fp32" for r in runs)]
    if not fp32:
        return {"queries": 0, "max_abs_diff": None, "median_abs_diff": None, "within_1e-4": 0}
    by = {k: next(r["rewards"] for r in runs if r["server"] == k) for k in (fp32[0], "naive")}
    common = sorted(set(by[fp32[0]]) & set(by["naive"]))
    diffs = sorted(abs(by[fp32[0]][q] - by["naive"][q]) for q in common)
    return {"queries": len(common), "max_abs_diff": diffs[-1] if diffs else None,
            "median_abs_diff": statistics.median(diffs) if diffs else None,
            "within_1e-4": sum(d <= 1e-4 for d in diffs)}


def summarize(runs: list[dict[str, Any]], servers: list[str]) -> dict[str, Any]:
    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["server"] == kind)

    table = {k: {key: med(k, key) for key in ("requests_per_s", "responses_per_s", "p50_ms",
                                                "p99_ms", "peak_rss_mb")} for k in servers}
    def rate(kind: str, rep: int) -> float:
        return float(next(r["responses_per_s"] for r in runs if r["rep"] == rep and r["server"] == kind))

    reps = sorted({r["rep"] for r in runs})
    versus = {k: {"responses_per_s_ratio_per_rep": (ratios := [rate(k, i) / rate("naive", i)
                                                               for i in reps]),
                  "responses_per_s_ratio_geomean": float(statistics.geometric_mean(ratios)),
                  "p99_ratio": table[k]["p99_ms"] / table["naive"]["p99_ms"]}
              for k in servers if k != "naive"}
    precision = {k: next(r["precision"] for r in runs if r["server"] == k) for k in servers}
    return {"servers": table, "precision": precision, "versus_naive": versus}


def print_table(summary: dict[str, Any], load: list[float]) -> None:
    print(f"{'server':<14} {'requests/s':>10} {'responses/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'peak RSS MB':>11}  precision")
    for kind, row in summary["servers"].items():
        print(f"{kind:<14} {row['requests_per_s']:>10.1f} {row['responses_per_s']:>11.1f} "
              f"{row['p50_ms']:>8.0f} {row['p99_ms']:>8.0f} {row['peak_rss_mb']:>11.0f}  "
              f"{summary['precision'][kind]}")
    for kind, v in summary["versus_naive"].items():
        ratios = ", ".join(f"{r:.2f}" for r in v["responses_per_s_ratio_per_rep"])
        print(f"responses/s {kind} / naive: {v['responses_per_s_ratio_geomean']:.2f}x "
              f"(per rep {ratios}); p99 {kind} / naive: {v['p99_ratio']:.2f}")
    print(f"1-min load average during the runs: {min(load):.2f}–{max(load):.2f} (2 cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--queries-per-request", type=int, default=1,
                        help="queries in one /get_reward request (OpenRLHF sends 1)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--max-length", type=int, default=256, help="model window (tokens)")
    parser.add_argument("--max-batch", type=int, default=32, help="rewardlab serve --max-batch")
    parser.add_argument("--forward-batch", type=int, default=8,
                        help="rewardlab serve --forward-batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="rewardlab serve --max-wait-ms")
    parser.add_argument("--workers", type=int, default=1, help="rewardlab serve --workers")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="rewardlab serve --precision")
    parser.add_argument("--servers", default="rewardlab,naive",
                        help=f"comma-separated, from {', '.join(SERVERS)} (naive is needed: every "
                             f"other is measured against it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="minilm", help="backbone of both servers: minilm or a "
                        "local model directory (a decoder: the naive server applies its chat "
                        "template)")
    parser.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "serve_load.json"))
    parser.add_argument("--naive-server", nargs=2, metavar=("DIR", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--naive-bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        run_naive_server(args.naive_server[0], int(args.naive_server[1]), args.max_length,
                         args.naive_bf16)
        return
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "naive" not in servers or set(servers) - set(SERVERS):  # before the model is built
        parser.error(f"--servers: from {', '.join(SERVERS)}, naive among them (the ratios)")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp) / "rm", args.max_length, args.model)
        n = args.clients * args.requests * args.queries_per_request
        queries = make_queries(n + 16 * args.queries_per_request, args.seed)
        plan = plan_for(queries[:n], args)
        warmup = [[queries[n + i * args.queries_per_request:n + (i + 1) * args.queries_per_request]]
                  for i in range(16)]
        runs = []
        for rep in range(args.reps):
            for kind in (servers if rep % 2 == 0 else servers[::-1]):
                result = measure(kind, model_dir, plan, warmup, args) | {"rep": rep}
                print(f"rep {rep} {kind:<12} {result['responses_per_s']:7.1f} responses/s  "
                      f"p50 {result['p50_ms']:6.0f} ms  p99 {result['p99_ms']:6.0f} ms  "
                      f"RSS {result['peak_rss_mb']:5.0f} MB  load {result['load_before']:.1f}",
                      flush=True)
                runs.append(result)
    summary = summarize(runs, servers)
    check = agreement(runs)
    load = [r[k] for r in runs for k in ("load_before", "load_after")]
    print_table(summary, load)
    if check["queries"]:
        print(f"same rewards (fp32): {check['within_1e-4']}/{check['queries']} queries within 1e-4 "
              f"(max |diff| {check['max_abs_diff']:.2e}: pairs cut at the window are truncated "
              f"differently, rewardlab keeping the response and the end of the prompt)")
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(args),
              "cpu_count": os.cpu_count(), "summary": summary, "agreement": check,
              "runs": [{k: v for k, v in r.items() if k != "rewards"} for r in runs]}
    Path(args.output).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
