"""Every code block of README.md runs (python) or parses (bash), read from README.md itself.

Python blocks run as written, on tiny data, each with only the substitutions listed in SWAPS
(exact strings, each required to be found in its block, so an edited README fails here rather than
drifting): the 1,512-pair sample becomes its first 80 pairs and MiniLM a tiny random BERT, so the
whole README runs in a few minutes. A block runs in a directory that holds what the README
has made by then: the checkpoint `m` (a tiny BERT trained by rewardlab) and the store
`rewardlab.db` with the dataset `hh`. The decoder block continues from `tok` and `model`, a tiny
decoder with a chat template; the serving block's URL is a real `rewardlab serve` app on a free
loopback port.

Bash blocks are too slow to run whole here (`make run` is 20 minutes); every command line in them
is parsed by the parser that would run it (rewardlab's, accelerate's, torchrun's), so each
subcommand and flag must exist and take the values shown; a `make` target must be in the Makefile.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rewardlab.data.source_result import SourceResult
from rewardlab.models.reward_model import RewardModel
from rewardlab.store.store import Store
from rewardlab.training.loop import train_reward_model
from rewardlab.training.train_config import TrainConfig
from tests._tiny import make_tiny_backbone, make_tiny_decoder, planted_pairs

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TINY_HH = "hh-tiny.jsonl.gz"  # the bundled sample's first 80 pairs, split 70/30 as the sample is


def _blocks(language: str) -> list[tuple[str, str]]:
    """(the heading above it, the code) of every ```language block of the README, in order."""
    heading, found, code, fence = "(top)", [], [], None
    for line in README.read_text(encoding="utf-8").splitlines():
        if fence is not None:  # inside a block (of any language)
            if line.startswith("```"):
                if fence == language:
                    found.append((heading, "\n".join(code) + "\n"))
                fence = None
            else:
                code.append(line)
        elif line.startswith("```"):
            fence, code = line[3:].strip(), []
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return found


PYTHON = _blocks("python")

# Per block (by its first line): the README's text → the tiny stand-in. Nothing else changes.
SWAPS: dict[str, list[tuple[str, str]]] = {
    "import rewardlab as rl\n\nstore": [
        ('rl.read_source("hh-rlhf-sample")', 'rl.read_source("{tiny_hh}", test_fraction=0.3)'),
        ('rl.TrainConfig(model="minilm")', 'rl.TrainConfig(model="{tiny}", max_length=64)'),
        ("rl.CompareConfig(seeds=2)", 'rl.CompareConfig(seeds=2, train="{tiny_hh}", '
                                      'test_fraction=0.3, training=rl.TrainConfig('
                                      'model="{tiny}", max_length=64))'),
    ],
    "from rewardlab.integrations import trl_reward": [
        ('"http://127.0.0.1:5000"', '"{serve_url}"'),
    ],
}


def _swapped(code: str, values: dict[str, str]) -> str:
    for key, swaps in SWAPS.items():
        if code.startswith(key):
            for old, new in swaps:
                assert code.count(old) == 1, f"README block changed: {old!r} not found once in\n{code}"
                code = code.replace(old, new.format(**values))
    return code


def test_the_readme_has_the_blocks_this_test_knows() -> None:
    """Every python block is run below; a SWAPS entry whose block left the README is stale."""
    assert len(PYTHON) >= 5
    for key in SWAPS:
        assert sum(code.startswith(key) for _, code in PYTHON) == 1, key


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """What the README has made by the time a block runs: `m` and the store's `hh`, in `home`."""
    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    home.mkdir()
    tiny = make_tiny_backbone(root / "tiny")
    config = TrainConfig(model=str(tiny), epochs=1, batch_size=4, lr=3e-3, max_length=64)
    train_reward_model(planted_pairs(16), config=config, output_dir=home / "m", progress=False)
    pairs = planted_pairs(16, seed=1) + planted_pairs(8, seed=2, split="test")
    Store(f"sqlite:///{home / 'rewardlab.db'}").ingest(
        "hh", SourceResult(spec="planted", pairs=pairs, read=len(pairs), rejected=[]))
    decoder = RewardModel(*_tiny_decoder(root / "decoder"), max_length=64)
    yield SimpleNamespace(root=root, home=home, tiny=tiny, decoder=decoder,
                          tiny_hh=_tiny_hh(root / TINY_HH))


def _tiny_hh(path: Path, rows: int = 80) -> Path:
    """The first `rows` pairs of the bundled HH-RLHF sample: real dialogues, minutes of work."""
    import gzip

    from rewardlab.data.sources import sample_path

    with gzip.open(sample_path(), "rt", encoding="utf-8") as f:
        head = [next(f) for _ in range(rows)]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(head)
    return path


def _tiny_decoder(directory: Path) -> tuple[Any, Any]:
    from rewardlab.models.backbones import load_backbone

    return load_backbone(str(make_tiny_decoder(directory, "qwen2")), max_length=64, seed=0)


def _run_block(code: str, cwd: Path, namespace: dict[str, Any],
               monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("REWARDLAB_DB", raising=False)  # the README's default store: ./rewardlab.db
    exec(compile(code, f"README.md block in {cwd}", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("heading,code", PYTHON, ids=[f"{i}-{h[:30]}" for i, (h, _) in
                                                       enumerate(PYTHON)])
def test_python_block_runs(heading: str, code: str, made: SimpleNamespace,
                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rewardlab.web.serve import ServeConfig, create_serve_app
    from rewardlab.web.server import background_server

    values = {"tiny": str(made.tiny), "tiny_hh": str(made.tiny_hh)}
    if code.startswith("import rewardlab as rl\n\nstore"):  # "From Python": makes its own m, store
        done = _run_block(_swapped(code, values), tmp_path, {}, monkeypatch)
        _check_from_python(done, tmp_path)
    elif "RewardTrainer" in code:
        _check_trl(_run_block(_swapped(code, values), made.home, {}, monkeypatch))
    elif code.startswith("from rewardlab.integrations import trl_reward"):
        rm = RewardModel.load(made.home / "m")
        with background_server(create_serve_app(rm, ServeConfig(precision="fp32"))) as url:
            done = _run_block(_swapped(code, {"serve_url": url}), made.home, {}, monkeypatch)
            prompts, completions = ["Human: How do I bake bread?"], ["Mix flour, water, salt."]
            got = done["reward"](prompts=prompts, completions=completions)
        assert got == pytest.approx(rm.score(prompts, completions), abs=1e-5)
    elif "apply_chat_template" in code:  # continues the decoder section's `tok` and `model`
        decoder = made.decoder
        done = _run_block(_swapped(code, values), made.home,
                          {"tok": decoder.tokenizer, "model": decoder.model}, monkeypatch)
        expected = decoder.score(["Human: How do I bake bread?"], ["Mix flour…"])[0]
        assert float(done["reward"]) == pytest.approx(expected, abs=1e-4)
    else:  # plain transformers on the checkpoint `m`
        done = _run_block(_swapped(code, values), made.home, {}, monkeypatch)
        if "reward" in done:
            rm = RewardModel.load(made.home / "m")
            expected = rm.score(["Human: How do I bake bread?"], ["Mix flour…"])[0]
            assert float(done["reward"]) == pytest.approx(expected, abs=1e-4)


def _check_from_python(done: dict[str, Any], cwd: Path) -> None:
    assert 0.0 <= done["metrics"]["accuracy"] <= 1.0
    results = done["results"]  # run_comparison returned: the str path "out" worked to the end
    assert set(results["conditions"]) == {"unfiltered", "clean-remove", "random"}
    assert all(len(c["runs"]) == 2 for c in results["conditions"].values())
    assert (cwd / "out" / "report.html").is_file()
    recorded = Store(f"sqlite:///{cwd / 'rewardlab.db'}").experiments()
    assert [(e["name"], len(e["runs"])) for e in recorded] == [("out", 6)]


def _check_trl(done: dict[str, Any]) -> None:
    """TRL trained, in bf16 only where this machine has a bf16 GPU (its default: bf16 anywhere)."""
    import math

    from transformers.utils import is_torch_bf16_gpu_available

    trainer = done["trainer"]
    assert trainer.args.bf16 is is_torch_bf16_gpu_available()
    assert trainer.state.global_step > 0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] or [
        trainer.state.log_history[-1]["train_loss"]]
    assert all(math.isfinite(x) for x in losses)


# ---------------------------------------------------------------- bash blocks

def _command_lines() -> list[tuple[str, str]]:
    """(heading, one command) for every command line of the README's bash blocks."""
    lines: list[tuple[str, str]] = []
    for heading, code in _blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", code)  # continuation lines
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append((heading, line))
    return lines


COMMANDS = _command_lines()


def _parses(parser: Any, args: list[str], line: str) -> None:
    """argparse exits (status 2) on an unknown subcommand or flag, or a value it refuses."""
    try:
        parser.parse_args(args)
    except SystemExit as e:
        pytest.fail(f"README command line does not parse ({e.code}): {line}")


def _after_module(words: list[str]) -> list[str]:
    """The rewardlab arguments of a `… -m rewardlab ARGS` launch."""
    at = words.index("-m")
    assert words[at + 1] == "rewardlab", words
    return words[at + 2:]


@pytest.mark.parametrize("heading,line", COMMANDS, ids=[f"{i}-{line.split()[0]}-{line[:40]}"
                                                        for i, (_, line) in enumerate(COMMANDS)])
def test_bash_command_line_parses(heading: str, line: str) -> None:
    from rewardlab.cli.main import build_parser

    words = shlex.split(line, comments=True)
    program = words[0]
    if program == "rewardlab":
        _parses(build_parser(), words[1:], line)
    elif program == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert set(words[1:]) <= set(targets), (words, targets)
    elif program == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        if words[1] == "config":
            return  # interactive; writes the YAML the launch lines read
        assert words[1] == "launch", words
        _parses(launch_command_parser(), words[2:], line)
        _parses(build_parser(), _after_module(words), line)
    elif program == "torchrun":
        from torch.distributed.run import get_args_parser

        _parses(get_args_parser(), words[1:], line)
        _parses(build_parser(), _after_module(words), line)
    elif program.startswith("scripts/"):  # one of the repo's scripts, with flags it names
        script = (ROOT / program).read_text()
        assert os.access(ROOT / program, os.X_OK), f"{program} is not executable"
        assert all(w in script for w in words[1:] if w.startswith("-")), line
    elif program == "source":
        assert words[1:] == [".venv/bin/activate"]
    else:
        pytest.fail(f"README bash line this test does not know how to check: {line!r}")


def test_every_public_function_that_takes_a_path_takes_str_and_pathlike(
        made: SimpleNamespace, tmp_path: Path) -> None:
    """`rewardlab.__all__`: paths as str and as os.PathLike alike (the README passes str)."""
    import rewardlab as rl

    source = tmp_path / "pairs.jsonl"
    source.write_text('{"prompt": "p", "chosen": "a good answer", "rejected": "no"}\n')
    assert len(rl.read_source(source).pairs) == len(rl.read_source(os.fspath(source)).pairs) == 1
    for path in (made.home / "m", os.fspath(made.home / "m")):
        assert rl.RewardModel.load(path).input_rule == "text-pair"
    # str: the README's "From Python" block; here a Path
    results = rl.run_comparison(
        rl.CompareConfig(seeds=1, train=str(made.tiny_hh), test_fraction=0.3,
                         training=rl.TrainConfig(model=str(made.tiny), max_length=64),
                         conditions=("unfiltered",)),
        tmp_path / "out", db=f"sqlite:///{tmp_path / 'c.db'}", progress=False)
    assert (tmp_path / "out" / "report.html").is_file()
    written = rl.write_report(results, os.fspath(tmp_path / "again"))
    assert written["html"].is_file()
    config = rl.TrainConfig(model=str(made.tiny), epochs=1, max_length=32, max_steps=1)
    trained = rl.train_reward_model(planted_pairs(8), config=config,
                                    output_dir=os.fspath(tmp_path / "m2"), progress=False)
    assert trained.output_dir == tmp_path / "m2" and (tmp_path / "m2" / "config.json").is_file()
