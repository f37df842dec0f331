"""Rated preference files made in the tests (issue 32): Arena votes with ties, UltraFeedback and
HelpSteer2 ratings, rankings. Each writer returns the rows it wrote, so a test can predict
every prompt, score and tie from them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def arena_rows(n: int = 200, *, tie_every: int = 5) -> list[dict[str, Any]]:
    """n one-hot votes: every `tie_every`-th a tie (n / tie_every ties), the others alternate
    between a win for a and a win for b. Response texts name their vote and side."""
    rows = []
    for i in range(n):
        tie = i % tie_every == 0
        a_wins = not tie and (i // tie_every) % 2 == 0
        rows.append({"id": i, "model_a": "m-a", "model_b": "m-b", "prompt": f"Question {i}?",
                     "response_a": f"answer a{i}", "response_b": f"reply b{i} is longer",
                     "winner_model_a": int(a_wins), "winner_model_b": int(not tie and not a_wins),
                     "winner_tie": int(tie)})
    return rows


def winner_of(row: dict[str, Any]) -> str:
    """The `winner` field equivalent to a row's one-hot columns."""
    return "tie" if row["winner_tie"] else "model_a" if row["winner_model_a"] else "model_b"


def feedback_rows(prompts: int = 60, k: int = 4) -> list[dict[str, Any]]:
    """UltraFeedback-shaped rows: K completions each, distinct overall scores (no ties), a
    `score` field that reverses them and a fine-grained score that ties the first two."""
    rows = []
    for i in range(prompts):
        completions = [{"model": f"m{j}", "response": f"completion {j} for {i}",
                        "overall_score": float((i + j) % k) + 1.0, "score": float(k - j),
                        "fine": 1.0 if j < 2 else float(j)}
                       for j in range(k)]
        rows.append({"source": "test", "instruction": f"Instruction {i}",
                     "completions": completions})
    return rows


def helpsteer_rows(prompts: int = 10, k: int = 2) -> list[dict[str, Any]]:
    """HelpSteer2-shaped rows: one per response, K responses per prompt, prompts interleaved
    (rows of one prompt are not adjacent), five attribute scores."""
    rows = []
    for j in range(k):
        for i in range(prompts):
            rows.append({"prompt": f"Prompt {i}", "response": f"response {j} to {i}",
                         "helpfulness": (i + j) % 5, "correctness": j, "coherence": 4,
                         "complexity": 2, "verbosity": k - j})
    return rows


def ranking_rows(prompts: int = 20, k: int = 4) -> list[dict[str, Any]]:
    """Rankings of K responses, best first: a rotation of the indices per prompt."""
    return [{"prompt": f"Rank these {i}", "responses": [f"r{j} of {i}" for j in range(k)],
             "ranking": [(i + m) % k for m in range(k)]} for i in range(prompts)]
