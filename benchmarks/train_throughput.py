"""Training throughput: rewardlab vs the original notebook's naive loop vs TRL's RewardTrainer.

Same data (HH-RLHF harmless sample, fixed 70/30 split by prompt hash), same backbone (MiniLM),
batch 8 pairs, max length 256, one epoch. Each measurement runs in its own subprocess (clean peak
RSS, no shared thread pools or accelerate state) and the paths are interleaved rep by rep, so
machine load drifts hit all of them alike.

    .venv/bin/python benchmarks/train_throughput.py                 # full sample, 1 rep
    .venv/bin/python benchmarks/train_throughput.py --pairs 200 --reps 2 --no-trl
    # a decoder: build a small Qwen2 (BPE tokenizer trained on the sample, ChatML template) and
    # train it with rewardlab and TRL (also: --model DIR of any local decoder, --lora-r 16)
    .venv/bin/python benchmarks/train_throughput.py --make-decoder /tmp/qwen2-small \
        --paths rewardlab,trl --pairs 400 --test-pairs 200 --reps 3

Paths:
  rewardlab  `train_reward_model` + `evaluate_reward_model` (tokenize once, length-grouped batches,
             dynamic padding, chosen+rejected in one forward, bf16 autocast where faster).
  naive      the notebook: tokenize per item in `__getitem__`, pad every text to max_length,
             chosen and rejected in two forwards, fp32, plain torch loop (right truncation).
  trl        `trl.RewardTrainer` defaults except gradient checkpointing off (faster) and no saving;
             fed the same token ids as rewardlab (chosen_ids/rejected_ids: the backbone's input
             rule, e.g. the chat template of a decoder), bf16 as rewardlab, the same LoRA adapter
             with --lora-r; its model is then scored by rewardlab's evaluator (test accuracy only).

For any backbone but MiniLM each path also records its training forwards (a global module hook,
the same for every path): forwards per optimizer step (1: chosen and rejected in one forward) and
the share of padding tokens in them (what length grouping saves).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-sample.jsonl.gz"
PATHS = ("rewardlab", "naive", "trl")
LR = 2e-5


def load_split(path: Path, n_train: int | None, n_test: int | None, *,
               single_turn: bool = False) -> tuple[list, list]:
    """The fixed ~70/30 split by prompt hash (rewardlab.data.sources.assign_split_by_hash).

    `single_turn`: only pairs whose dialogue is one Human turn (no earlier context), in file order,
    the first `n_train` to train on and the next `n_test` to test on, whatever their split: the
    sample's train split holds 281 such pairs, fewer than the issue-34 workload's 320.
    """
    from rewardlab.data.sources import read_source

    pairs = read_source(str(path), test_fraction=0.3).pairs
    if single_turn:
        one = [p for p in pairs if not p.context]
        n = n_train or len(one)
        return one[:n], one[n:][:n_test]
    train = [p for p in pairs if p.split == "train"][:n_train]
    test = [p for p in pairs if p.split == "test"][:n_test]
    return train, test


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- (a) rewardlab -------------------------------------------------------------------------------
def run_rewardlab(train: list, test: list, args: argparse.Namespace) -> dict[str, Any]:
    from rewardlab.evaluation.evaluate import evaluate_reward_model
    from rewardlab.training.loop import train_reward_model
    from rewardlab.training.train_config import TrainConfig

    config = TrainConfig(model=args.model, epochs=1, batch_size=args.batch_size, lr=_lr(args),
                         max_length=args.max_length, seed=args.seed, precision=args.precision,
                         lora_r=args.lora_r)
    t0 = time.perf_counter()
    with count_forwards(args) as forwards:
        result = train_reward_model(train, config=config, progress=False)
    t1 = time.perf_counter()
    ev = evaluate_reward_model(result.model, test)
    t2 = time.perf_counter()
    from rewardlab.models.kernels import compiled_kernels

    return {"train_seconds": t1 - t0, "eval_seconds": t2 - t1, "train_loss": result.train_loss,
            "test_accuracy": ev.metrics["accuracy"], "precision": result.precision,
            "n_truncated": result.n_truncated, "steps": result.steps,
            "steps_seconds": result.model.info["train_seconds"],  # the optimizer steps alone
            "input_rule": result.model.input_rule, **forwards.summary(result.steps),
            "compiled_attention": compiled_kernels() is not None}  # built by scripts/setup.sh


# --- (b) the original notebook's naive loop ---------------------------------------------------------
def _naive_dataset(pairs: list, tok: Any, max_length: int) -> Any:
    import torch

    class NaivePairs(torch.utils.data.Dataset):
        """Tokenizes on every access and pads every text to max_length."""

        def __len__(self) -> int:
            return len(pairs)

        def __getitem__(self, i: int) -> dict[str, Any]:
            p, item = pairs[i], {}
            for side in ("chosen", "rejected"):
                enc = tok(p.prompt_text, getattr(p, side), truncation=True, max_length=max_length,
                          padding="max_length", return_tensors="pt")
                item.update({f"{side}_{k}": v[0] for k, v in enc.items()})
            return item

    return NaivePairs()


def _naive_rewards(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Two forwards: chosen, then rejected."""
    out = []
    for side in ("chosen", "rejected"):
        inputs = {k[len(side) + 1:]: v for k, v in batch.items() if k.startswith(side)}
        out.append(model(**inputs).logits.squeeze(-1))
    return out[0], out[1]


def run_naive(train: list, test: list, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewardlab.models.backbones import resolve_backbone

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    path = resolve_backbone(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.pad_token or tok.eos_token  # decoders: the notebook would pad with EOS
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                               pad_token_id=tok.pad_token_id)
    loader = DataLoader(_naive_dataset(train, tok, args.max_length), batch_size=args.batch_size,
                        shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    losses = []
    for batch in loader:
        r_c, r_r = _naive_rewards(model, batch)
        loss = -F.logsigmoid(r_c - r_r).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    t1 = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in DataLoader(_naive_dataset(test, tok, args.max_length),
                                batch_size=args.batch_size):
            r_c, r_r = _naive_rewards(model, batch)
            correct += int((r_c > r_r).sum())
    t2 = time.perf_counter()
    return {"train_seconds": t1 - t0, "eval_seconds": t2 - t1,
            "train_loss": sum(losses) / len(losses), "test_accuracy": correct / len(test),
            "precision": "fp32"}


# --- (c) TRL's RewardTrainer ---------------------------------------------------------------------
def run_trl(train: list, test: list, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from rewardlab.models.backbones import load_backbone
    from rewardlab.models.reward_model import RewardModel
    from rewardlab.training.runtime import resolve_precision

    precision = resolve_precision(args.precision, model=args.model, device=torch.device("cpu"))
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model, tok = load_backbone(args.model, max_length=args.max_length, seed=args.seed)
    # the token ids rewardlab trains on: the backbone's input rule (text pair, chat template, …)
    enc = RewardModel(model, tok, max_length=args.max_length).encode_pairs(train)
    data = Dataset.from_dict({"chosen_ids": enc.chosen.input_ids,
                              "rejected_ids": enc.rejected.input_ids})
    with tempfile.TemporaryDirectory() as out:
        config = RewardConfig(output_dir=out, per_device_train_batch_size=args.batch_size,
                              num_train_epochs=1, learning_rate=_lr(args),
                              max_length=args.max_length, gradient_checkpointing=False,
                              bf16=precision == "bf16", save_strategy="no", report_to="none",
                              logging_steps=50, seed=args.seed, disable_tqdm=True,
                              use_cpu=not torch.cuda.is_available())
        trainer = RewardTrainer(model=model, args=config, train_dataset=data,
                                processing_class=tok, peft_config=_trl_lora(model, args))
        with count_forwards(args) as forwards:
            stats = trainer.train()
    t1 = time.perf_counter()
    # TRL's model scored by rewardlab's evaluator: the same test pairs and inputs as (a)
    from rewardlab.evaluation.evaluate import evaluate_reward_model

    scored = trainer.model.merge_and_unload() if args.lora_r else trainer.model
    trained = RewardModel(scored.float(), tok, max_length=args.max_length)
    accuracy = evaluate_reward_model(trained, test).metrics["accuracy"]
    steps = stats.global_step
    return {"train_seconds": t1 - t0, "eval_seconds": None, "train_loss": stats.training_loss,
            "test_accuracy": accuracy, "precision": precision, "steps": steps,
            "steps_seconds": stats.metrics["train_runtime"],  # Trainer.train() alone
            **forwards.summary(steps)}


def _trl_lora(model: Any, args: argparse.Namespace) -> Any:
    """The adapter rewardlab trains for --lora-r (same targets, α = 2r, head in modules_to_save)."""
    if not args.lora_r:
        return None
    from peft import LoraConfig

    from rewardlab.training.lora import head_modules, lora_targets
    from rewardlab.training.train_config import TrainConfig

    config = TrainConfig(model=args.model, lora_r=args.lora_r)
    return LoraConfig(task_type="SEQ_CLS", r=args.lora_r, lora_alpha=2 * args.lora_r,
                      lora_dropout=0.0, target_modules=lora_targets(model, config),
                      modules_to_save=head_modules(model))


def _lr(args: argparse.Namespace) -> float:
    from rewardlab.training.train_config import LORA_LR

    return LORA_LR if args.lora_r else LR


class _Forwards:
    """Training forwards of the reward model seen by a global module hook: rows, width, real tokens."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.squares = 0  # Σ real length² over the rows: attention's FLOPs (benchmarks/gpu_bench.py)

    def hook(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        from transformers import PreTrainedModel  # not peft's PeftModelFor… wrapper: counted once

        mask = kwargs.get("attention_mask")
        if (module.training and mask is not None and mask.dim() == 2
                and isinstance(module, PreTrainedModel)
                and type(module).__name__.endswith("ForSequenceClassification")):
            lengths = mask.sum(dim=1).tolist()  # one host copy, as int(mask.sum()) was
            self.calls.append((mask.shape[0], mask.shape[1], sum(lengths)))
            self.squares += sum(n * n for n in lengths)

    def summary(self, steps: int) -> dict[str, Any]:
        if not self.calls:  # off (MiniLM), or a packed forward that never calls the HF model
            return {}
        grid = sum(rows * width for rows, width, _ in self.calls)
        return {"forwards": len(self.calls), "forwards_per_step": len(self.calls) / max(steps, 1),
                "rows_per_forward": statistics.fmean(r for r, _, _ in self.calls),
                "padding_share": 1 - sum(real for _, _, real in self.calls) / grid,
                "tokens": sum(real for _, _, real in self.calls), "tokens_squared": self.squares}


@contextlib.contextmanager
def count_forwards(args: argparse.Namespace) -> Iterator[_Forwards]:
    """Count the training forwards inside the block (off for MiniLM, whose packed path skips them)."""
    import torch

    forwards = _Forwards()
    if args.model == "minilm":
        yield forwards
        return
    handle = torch.nn.modules.module.register_module_forward_hook(forwards.hook, with_kwargs=True)
    try:
        yield forwards
    finally:
        handle.remove()


RUNNERS = {"rewardlab": run_rewardlab, "naive": run_naive, "trl": run_trl}

# Qwen2's chat template in short (ChatML), as tests/_tiny.py has it
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def make_decoder(directory: Path, data: Path, *, width: int, layers: int,
                 vocab_size: int = 4096, intermediate: int | None = None,
                 kv_heads: int | None = None) -> Path:
    """A random Qwen2 reward model with a byte-level BPE tokenizer trained on `data`'s texts.

    Special tokens as Qwen2's: pad `<|endoftext|>`, EOS `<|im_end|>`, a ChatML template; the
    weights are random (the benchmark measures speed; both paths start from the same weights).
    `intermediate` (default 3 × width) and `kv_heads` (default half the heads) give a real model's
    shapes, e.g. Qwen2.5-0.5B's: width 896, 24 layers, 4864, 2.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForSequenceClassification

    from rewardlab.data.sources import read_source

    pairs = read_source(str(data)).pairs
    corpus = [t for p in pairs for t in (p.prompt_text, p.chosen, p.rejected)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    heads = max(width // 64, 1)
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(Qwen2Config(
        vocab_size=len(tok), hidden_size=width, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads or max(heads // 2, 1),
        intermediate_size=intermediate or 3 * width, max_position_embeddings=1024, tie_word_embeddings=False,
        num_labels=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def worker(args: argparse.Namespace) -> None:
    """One measurement, in this process; prints one JSON line."""
    train, test = load_split(args.data, args.pairs, args.test_pairs, single_turn=args.single_turn)
    load_start, cpu_start = os.getloadavg()[0], _cpu_seconds()
    out = RUNNERS[args.worker](train, test, args)
    # CPU seconds next to wall seconds: on a shared machine, wall time also counts waiting
    out.update(cpu_seconds=_cpu_seconds() - cpu_start, load_avg_start=load_start,
               load_avg_end=os.getloadavg()[0])
    out.update(path=args.worker, seed=args.seed, train_pairs=len(train), test_pairs=len(test),
               train_pairs_per_s=len(train) / out["train_seconds"],
               steps_pairs_per_s=(len(train) / out["steps_seconds"]
                                  if out.get("steps_seconds") else None),
               eval_pairs_per_s=len(test) / out["eval_seconds"] if out["eval_seconds"] else None,
               peak_rss_mb=peak_rss_mb(), threads=__import__("torch").get_num_threads())
    print("RESULT " + json.dumps(out), flush=True)


def measure(path: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", path, "--seed", str(seed), "--data",
           str(args.data), "--batch-size", str(args.batch_size), "--max-length",
           str(args.max_length), "--precision", args.precision, "--model", args.model,
           "--lora-r", str(args.lora_r)]
    env = dict(os.environ)
    if args.threads:  # OpenMP reads it at start-up: the whole process, tokenizer pools aside
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        cmd += ["--threads", str(args.threads)]
    for flag, value in (("--pairs", args.pairs), ("--test-pairs", args.test_pairs)):
        if value:
            cmd += [flag, str(value)]
    if args.single_turn:
        cmd.append("--single-turn")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    process_seconds = time.perf_counter() - start  # exec to exit: imports and evaluation too
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{path} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "process_seconds": process_seconds}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(path: str, key: str) -> float | None:
        values = [r[key] for r in runs if r["path"] == path and r.get(key) is not None]
        return statistics.median(values) if values else None

    def mean(path: str, key: str) -> float | None:
        values = [r[key] for r in runs if r["path"] == path and r.get(key) is not None]
        return statistics.fmean(values) if values else None

    paths = sorted({r["path"] for r in runs}, key=PATHS.index)
    table = {p: {"train_pairs_per_s": med(p, "train_pairs_per_s"),
                 "eval_pairs_per_s": med(p, "eval_pairs_per_s"),
                 "peak_rss_mb": med(p, "peak_rss_mb"), "test_accuracy": mean(p, "test_accuracy"),
                 "train_loss": mean(p, "train_loss"),
                 "forwards_per_step": mean(p, "forwards_per_step"),
                 "padding_share": mean(p, "padding_share")} for p in paths}
    a = table.get("rewardlab", {}).get("train_pairs_per_s")
    ratios = {f"rewardlab/{p}": a / table[p]["train_pairs_per_s"] for p in paths
              if p != "rewardlab" and a and table[p]["train_pairs_per_s"]}
    if "naive" in table and table.get("rewardlab", {}).get("eval_pairs_per_s"):
        ratios["eval rewardlab/naive"] = (table["rewardlab"]["eval_pairs_per_s"]
                                          / table["naive"]["eval_pairs_per_s"])
    others = [p for p in paths if p != "rewardlab"] if "rewardlab" in paths else []
    paired = {f"rewardlab/{p}": paired_ratio(runs, p) for p in others}
    # the training steps alone (no model load, tokenizing, Trainer set-up or rewardlab's
    # after-training reward statistics), where both paths record them
    paired |= {f"steps rewardlab/{p}": paired_ratio(runs, p, key="steps_pairs_per_s")
               for p in others}
    return {"table": table, "ratios": ratios,
            "paired_ratios": {k: v for k, v in paired.items() if v is not None}}


def paired_ratio(runs: list[dict[str, Any]], other: str, *, key: str = "train_pairs_per_s"
                 ) -> dict[str, Any] | None:
    """Speed ratio per repetition (same seed, run back to back) with a 95% CI.

    The ratios are averaged on the log scale (geometric mean) and the interval is Student's t over
    the repetitions: with three of them it is wide, which is the honest answer on a machine whose
    whole-run times move by ~5%.
    """
    import math

    from scipy import stats

    def speed(path: str) -> dict[int, float]:
        return {r["seed"]: r[key] for r in runs if r["path"] == path and r.get(key)}

    ours, theirs = speed("rewardlab"), speed(other)
    logs = [math.log(ours[s] / theirs[s]) for s in sorted(ours) if s in theirs]
    if not logs:
        return None
    mean = statistics.fmean(logs)
    out: dict[str, Any] = {"per_rep": [math.exp(x) for x in logs], "geomean": math.exp(mean)}
    if len(logs) > 1:
        half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        out["ci95"] = [math.exp(mean - half), math.exp(mean + half)]
    return out


def print_table(summary: dict[str, Any]) -> None:
    def fmt(v: Any, spec: str) -> str:
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    print(f"{'path':<10} {'train pairs/s':>13} {'eval pairs/s':>12} {'peak RSS MB':>11} "
          f"{'test acc':>8} {'train loss':>10}")
    for path, row in summary["table"].items():
        print(f"{path:<10} {fmt(row['train_pairs_per_s'], '13.2f')} "
              f"{fmt(row['eval_pairs_per_s'], '12.2f')} {fmt(row['peak_rss_mb'], '11.0f')} "
              f"{fmt(row['test_accuracy'], '8.4f')} {fmt(row['train_loss'], '10.4f')}")
    for path, row in summary["table"].items():
        if row.get("forwards_per_step") is not None:
            print(f"{path}: {row['forwards_per_step']:.2f} training forwards per step, "
                  f"{row['padding_share']:.1%} of their tokens padding")
    for name, ratio in summary["ratios"].items():
        print(f"{name}: {ratio:.2f}x")
    for name, paired in summary["paired_ratios"].items():
        ci = paired.get("ci95")
        interval = f", 95% CI {ci[0]:.2f}-{ci[1]:.2f}x" if ci else ""
        reps = ", ".join(f"{x:.2f}" for x in paired["per_rep"])
        print(f"{name} per repetition: {reps} (geometric mean {paired['geomean']:.2f}x{interval})")


def _commit() -> str | None:
    """The code measured: figures from different runs are comparable only for the same commit."""
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SAMPLE)
    p.add_argument("--pairs", type=int, help="first N train pairs (default: all ~1,030)")
    p.add_argument("--test-pairs", type=int, help="first N test pairs (default: all ~480)")
    p.add_argument("--single-turn", action="store_true", help="only single-turn pairs (one Human "
                   "turn), in file order across both splits: --pairs to train, --test-pairs to test")
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions per path")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of paths")
    p.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", default="minilm", help="backbone of every path: minilm, a local "
                   "model directory or a hub id")
    p.add_argument("--make-decoder", type=Path, metavar="DIR", help="build a small random Qwen2 "
                   "reward model in DIR (BPE tokenizer trained on --data, ChatML template) and "
                   "benchmark it (sets --model DIR)")
    p.add_argument("--decoder-width", type=int, default=256, help="hidden size of --make-decoder")
    p.add_argument("--decoder-layers", type=int, default=4, help="layers of --make-decoder")
    p.add_argument("--decoder-intermediate", type=int, help="MLP width of --make-decoder "
                   "(default 3 x width)")
    p.add_argument("--decoder-kv-heads", type=int, help="key/value heads of --make-decoder "
                   "(default half of width / 64)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads per measurement "
                   "(0 = torch's default, the cores); 1 is steadier on a machine shared with other "
                   "work, where idle OpenMP threads spin waiting for a busy core")
    p.add_argument("--lora-r", type=int, default=0, help="train a LoRA adapter of this rank (+ the "
                   "head) in rewardlab and TRL alike; 0 = full fine-tuning")
    p.add_argument("--output", type=Path, help="results file (default: benchmarks/"
                   "train_throughput.json for MiniLM, train_throughput.decoder.json otherwise)")
    p.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.make_decoder:
        args.model = str(make_decoder(args.make_decoder, args.data, width=args.decoder_width,
                                      layers=args.decoder_layers,
                                      intermediate=args.decoder_intermediate,
                                      kv_heads=args.decoder_kv_heads))
    name = "train_throughput.json" if args.model == "minilm" else "train_throughput.decoder.json"
    args.output = args.output or ROOT / "benchmarks" / name
    paths = [x for x in args.paths.split(",") if x]
    try:
        import trl  # noqa: F401
    except ImportError:
        args.no_trl = True
    if args.no_trl and "trl" in paths:
        paths.remove("trl")
    runs = []
    for rep in range(args.reps):
        order = paths[rep % len(paths):] + paths[:rep % len(paths)]  # rotate: no path always first
        for path in order:
            runs.append(measure(path, args.seed + rep, args))
            r = runs[-1]
            print(f"rep {rep} {path:<10} train {r['train_pairs_per_s']:.2f} pairs/s "
                  f"({r['train_seconds']:.0f}s)", flush=True)
    summary = summarize(runs)
    print_table(summary)
    meta = {"cpu_count": os.cpu_count(), "load_avg_end": os.getloadavg(), "commit": _commit(),
            "args": {k: str(v) for k, v in vars(args).items() if k != "worker"}}
    args.output.write_text(json.dumps({**summary, "runs": runs, "meta": meta}, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
