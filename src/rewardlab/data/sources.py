"""Source specs → `SourceResult`: the pairs of one source, with counts and rejected rows.

Specs understood by `read_source`:

- `hh-rlhf` / `hh-rlhf:<subset>[,<subset>…]`: Anthropic/hh-rlhf from the Hugging Face hub, train and
  test splits, each preference subset loaded separately so `pair.subset` is known.
  `red-team-attempts` is not preference data and is refused.
- a `datasets` folder: what `Dataset`/`DatasetDict.save_to_disk` writes (`load_from_disk`), or a
  hub dataset repo on disk (`data/train-00000-of-00003.parquet` shards, or README `configs:`;
  `load_dataset`). A DatasetDict's `train`/`test` are the splits; any other split is refused
  unless `split` picks one. Rows go through the same row shapes as files.
- a file: `.jsonl`, `.json`, `.csv` (each optionally `.gz`), `.parquet` or `.arrow`, in any row shape of
  `rewardlab.data.formats`. All its rows get `split` (default "train"); the subset is the parent folder's
  name when that is an HH-RLHF subset (`…/harmless-base/test.jsonl.gz`), else "".
- a directory laid out like github.com/anthropics/hh-rlhf: `<dir>/<subset>/{train,test}.jsonl.gz`
  (subset = folder name, split = file name; `red-team-attempts/` is skipped), or a subset folder
  itself holding `{train,test}.jsonl[.gz]`.
- `synthetic:…`: delegated to `rewardlab.data.synthetic.read_synthetic`; with `k=K` (K responses
  per prompt, `ties=T`) to `read_synthetic_rated`, as rated data.
- rated files (issue 32), told by their columns: Arena votes with ties, explicit pairs with a
  `tie` column, UltraFeedback and HelpSteer2 ratings, rankings (`rewardlab.data.rated_formats`).
  Their `SourceResult.rated` holds the prompts and `pairs` their decided pairs; `score_field`
  picks the rating of UltraFeedback / HelpSteer2 rows.
- `hh-rlhf-sample`: the 1,512 HH-RLHF harmless-base pairs this package ships (MIT, Anthropic; see
  `hh_rlhf_sample/LICENSE`), so the main job runs without the hub; its pairs carry subset
  `harmless-base` (`SAMPLE_SUBSET`). It is one split, so unless a split or a test fraction is
  given it is split 70/30 by prompt hash (`SAMPLE_TEST_FRACTION`).

`source_index` is the 0-based row index within its own file / hub (subset, split), so
`(subset, split, source_index)` identifies a row; for a single file it is the row number (the line
number − 1 when there are no blank lines). With several files, a rejected row's reason starts with
`<subset>/<split>: `. `limit` keeps the first N rows of each file / hub (subset, split).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rewardlab.data.formats import FILE_SUFFIXES, file_format, pairs_from_rows, read_rows
from rewardlab.data.pairs import SPLITS, PreferencePair, Split
from rewardlab.data.rated import RatedPrompt
from rewardlab.data.rated_formats import rated_from_rows, rated_result, rated_shape
from rewardlab.data.source_result import SourceResult
from rewardlab.data.synthetic import parse_synthetic_spec, read_synthetic, read_synthetic_rated
from rewardlab.errors import SourceError

__all__ = [
    "HH_REPO",
    "SAMPLE",
    "SAMPLE_TEST_FRACTION",
    "SAMPLE_SUBSET",
    "sample_path",
    "HH_SUBSETS",
    "SourceResult",
    "read_source",
    "read_hh_hub",
    "assign_split_by_hash",
]

HH_REPO = "Anthropic/hh-rlhf"
SAMPLE = "hh-rlhf-sample"  # the embedded offline default (module doc)
SAMPLE_TEST_FRACTION = 0.3
# the sample's rows come from one HH-RLHF subset; its folder name does not say which (LICENSE)
SAMPLE_SUBSET = "harmless-base"
HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
# a hub repo's data shard: data/train-00000-of-00003.parquet (any file type datasets reads)
_SHARD = re.compile(r"^[\w.-]+?-\d{5}-of-\d{5}\.\w+")
_NOT_PREFERENCE = "red-team-attempts"  # transcripts with ratings, no chosen/rejected pairs
_UNKNOWN = ("expected a file ({suffixes}), a directory laid out like anthropics/hh-rlhf, "
            "a datasets folder (save_to_disk, hub-style parquet shards), "
            "'hh-rlhf[:subset]', 'hh-rlhf-sample' or 'synthetic:…'")


def read_source(spec: str | os.PathLike[str], *, split: Split | None = None,
                test_fraction: float | None = None, limit: int | None = None,
                score_field: str | None = None) -> SourceResult:
    """Read every pair of `spec` (see the module docstring for the specs).

    Parameters
    ----------
    spec : str or os.PathLike
        What to read: a file (`.jsonl`, `.json`, `.csv`, each optionally `.gz`, `.parquet`,
        `.arrow`), a directory laid out like anthropics/hh-rlhf, a `datasets` folder,
        `"hh-rlhf[:subset,…]"` (the hub), `"hh-rlhf-sample"` (the 1,512 pairs shipped with the
        package, offline) or `"synthetic:n=…,noise=…,seed=…"` (known flipped labels).
    split : {"train", "test"} or None, default None
        For a single file: the split all its rows get (None: "train"). For a directory, a
        `datasets` folder or the hub: keep only that split (None: both).
    test_fraction : float or None, default None
        In (0, 1): carve a test split of about this share out of a single-split source, by a hash
        of each prompt (`assign_split_by_hash`), so the same prompt always lands on the same side.
        None keeps the source's splits (`hh-rlhf-sample` alone defaults to 0.3).
    limit : int or None, default None
        Keep only the first `limit` rows of each file / hub (subset, split); None reads all.
    score_field : str or None, default None
        For rated completions: the field that is the rating (UltraFeedback default
        `overall_score`, else `score`; HelpSteer2 default `helpfulness`). Refused elsewhere.

    Returns
    -------
    SourceResult
        The accepted pairs (split assigned), the rows read, and the rejected rows with a reason
        each (`read == len(pairs) + len(rejected)`); for a rated source also its prompts
        (`rated`), `pairs` being their decided pairs.

    Raises `SourceError` with a one-line message (`FILE:LINE: …`) for any bad input.

    >>> result = read_source("hh-rlhf-sample")
    >>> result.read, len(result.pairs), result.rejected
    (1512, 1512, [])
    >>> sum(pair.split == "test" for pair in result.pairs)  # split 70/30 by prompt hash
    482
    """
    spec = os.fspath(spec)  # a Path too (issue 35): every public function takes str | PathLike
    if spec.startswith("synthetic:"):
        return _read_synthetic(spec, split=split, test_fraction=test_fraction, limit=limit,
                               score_field=score_field)
    _check_options(split, test_fraction, limit)
    if spec == SAMPLE and split is None and test_fraction is None:
        test_fraction = SAMPLE_TEST_FRACTION
    result = _read_unsplit(spec, split=split, limit=limit, score_field=score_field)
    if score_field is not None and not result.rated:
        raise SourceError(f"{spec}: --score-field applies to rated completions (UltraFeedback, "
                          "HelpSteer2); this source holds preference pairs")
    _refuse_all_rejected(result)
    if test_fraction is None:
        return result
    splits = {p.split for p in result.rated} | {p.split for p in result.pairs}
    if splits == {"train", "test"}:
        raise SourceError(f"{spec}: already has train and test splits; a test fraction only "
                          "applies to a single-split source")
    if result.rated:
        prompts = _assign_rated_split_by_hash(result.rated, test_fraction)
        return rated_result(result.spec, prompts, read=result.read)
    return replace(result, pairs=assign_split_by_hash(result.pairs, test_fraction))


def _read_synthetic(spec: str, *, split: Split | None, test_fraction: float | None,
                    limit: int | None, score_field: str | None) -> SourceResult:
    """`synthetic:…` pairs, or with `k=` rated prompts (K responses each, scored by the true
    quality); `limit` keeps the first N prompts of each split."""
    if score_field is not None:
        raise SourceError(f"{spec}: --score-field applies to rated completions; synthetic "
                          "responses are scored by their true quality")
    if parse_synthetic_spec(spec).k is None:
        return read_synthetic(spec, split=split, test_fraction=test_fraction, limit=limit)
    _check_options(split, test_fraction, limit)
    if test_fraction is not None:
        raise SourceError(f"{spec}: a test fraction does not apply to k= specs; size the test "
                          "split with test_n= in the spec")
    data = read_synthetic_rated(spec, split=split)
    prompts = [p for s in SPLITS for p in [q for q in data.prompts if q.split == s][:limit]]
    return rated_result(spec, prompts, read=len(prompts))


def _refuse_all_rejected(result: SourceResult, *, shown: int = 3) -> None:
    """A source none of whose rows is a pair is a wrong file or a wrong shape, not an empty
    dataset: fail, naming it and the first reasons, instead of ingesting nothing with exit 0."""
    if result.pairs or not result.rejected:
        return
    first = "; ".join(f"row {i}: {reason}" for i, reason in result.rejected[:shown])
    more = "; …" if len(result.rejected) > shown else ""
    raise SourceError(f"{result.spec}: all {result.read:,} rows rejected, nothing to ingest "
                      f"(first: {first}{more})")


def _check_options(split: str | None, test_fraction: float | None, limit: int | None) -> None:
    """Validate the keyword options once, at the edge."""
    if split is not None and split not in SPLITS:
        raise SourceError(f"unknown split {split!r}: expected 'train' or 'test'")
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        raise SourceError(f"test fraction {test_fraction} must be between 0 and 1 (exclusive)")
    if split is not None and test_fraction is not None:
        raise SourceError("pass either a split or a test fraction, not both "
                          "(the test fraction assigns the splits)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SourceError(f"limit {limit!r} must be a positive integer")


def sample_path() -> Path:
    """The embedded HH-RLHF sample file (`hh-rlhf-sample`)."""
    return Path(__file__).parent / "hh_rlhf_sample" / "harmless-sample.jsonl.gz"


def _read_unsplit(spec: str, *, split: Split | None, limit: int | None,
                  score_field: str | None) -> SourceResult:
    if spec == SAMPLE:
        return _read_file(spec, sample_path(), split=split, limit=limit, subset=SAMPLE_SUBSET)
    if spec == "hh-rlhf" or spec.startswith("hh-rlhf:"):
        result = read_hh_hub(_hub_subsets(spec), split=split, limit=limit)
        return replace(result, spec=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _read_directory(spec, path, split=split, limit=limit, score_field=score_field)
    if path.is_file():
        return _read_file(spec, path, split=split, limit=limit, score_field=score_field)
    hint = "no such file or directory; " if path.suffix or os.sep in spec else ""
    raise SourceError(f"unknown source {spec!r}: {hint}"
                      + _UNKNOWN.format(suffixes=", ".join(FILE_SUFFIXES)))


def _read_file(spec: str, path: Path, *, split: Split | None, limit: int | None,
               subset: str | None = None, score_field: str | None = None) -> SourceResult:
    """One file: every row gets `split` or "train", and `subset` or its folder's HH subset name."""
    columns, rows = read_rows(path, limit=limit)
    if subset is None:
        subset = path.parent.name if path.parent.name in HH_SUBSETS else ""
    return _rows_result(spec, rows, columns=columns, name=str(path), split=split or "train",
                        subset=subset, score_field=score_field)


def _rows_result(spec: str, rows: Any, *, columns: list[str], name: str, split: Split,
                 subset: str = "", reason_prefix: str = "",
                 score_field: str | None = None) -> SourceResult:
    """Rows of one file or split: rated prompts when the columns have a rated shape, else pairs."""
    shape = rated_shape(columns)
    if shape is not None:
        rows = list(rows)
        prompts = rated_from_rows(rows, columns=columns, name=name, split=split, shape=shape,
                                  score_field=score_field)
        return rated_result(spec, prompts, read=len(rows))
    pairs, rejected, read = pairs_from_rows(rows, columns=columns, name=name, split=split,
                                            subset=subset, reason_prefix=reason_prefix)
    return SourceResult(spec=spec, pairs=pairs, read=read, rejected=rejected)


def _assign_rated_split_by_hash(prompts: Sequence[RatedPrompt],
                                test_fraction: float) -> list[RatedPrompt]:
    """`assign_split_by_hash` for rated prompts: by the prompt text their pairs would have."""
    return [replace(p, split="test" if _hash_unit(p.prompt_text) < test_fraction else "train")
            for p in prompts]


def _read_directory(spec: str, root: Path, *, split: Split | None,
                    limit: int | None, score_field: str | None = None) -> SourceResult:
    """A `datasets` folder (save_to_disk or hub-style), else every `<subset>/<split>.<ext>` file
    of an anthropics/hh-rlhf-shaped directory."""
    saved = _is_saved_dataset(root)
    if saved or _is_hub_style(root):
        return _read_datasets_folder(spec, root, saved=saved, split=split, limit=limit,
                                     score_field=score_field)
    try:
        files = [f for f in _layout_files(root) if split is None or f[1] == split]
    except OSError as e:
        raise SourceError(f"{root}: cannot list directory ({e.strerror or e})") from e
    if not files:
        wanted = split or "{train,test}"
        raise SourceError(f"{root}: no <subset>/{wanted}.jsonl.gz files; expected a directory "
                          "laid out like github.com/anthropics/hh-rlhf")
    result = SourceResult(spec=spec, pairs=[], read=0, rejected=[])
    for subset, file_split, path in files:
        columns, rows = read_rows(path, limit=limit)
        pairs, rejected, read = pairs_from_rows(
            rows, columns=columns, name=str(path), split=file_split, subset=subset,
            reason_prefix=f"{subset}/{file_split}: ")
        _extend(result, pairs, rejected, read)
    return result


def _is_saved_dataset(root: Path) -> bool:
    """What `Dataset.save_to_disk` (state.json) or `DatasetDict.save_to_disk` writes."""
    return (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()


def _is_hub_style(root: Path) -> bool:
    """A hub dataset repo on disk: `data/<split>-00000-of-0000N.<ext>` shards or README configs.
    Strict on purpose, so an HH-shaped directory with a `data/` subset folder stays one."""
    data = root / "data"
    if data.is_dir() and any(_SHARD.match(f.name) for f in data.iterdir()):
        return True
    readme = root / "README.md"
    if not readme.is_file():
        return False
    header = readme.read_text(encoding="utf-8", errors="replace").split("\n---", 1)[0]
    return header.startswith("---") and "\nconfigs:" in header


def _read_datasets_folder(spec: str, root: Path, *, saved: bool, split: Split | None,
                          limit: int | None, score_field: str | None = None) -> SourceResult:
    """Each train/test split of a `datasets` folder, rows through the same row-shape parsing."""
    splits = _pick_splits(root, _load_datasets_folder(root, saved=saved), split)
    result = SourceResult(spec=spec, pairs=[], read=0, rejected=[])
    for name, dataset in splits:
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        part = _rows_result(spec, dataset, columns=dataset.column_names, name=f"{root} {name}",
                            split=name, reason_prefix=f"{name}: " if len(splits) > 1 else "",
                            score_field=score_field)
        _extend(result, part.pairs, part.rejected, part.read)
        result.rated.extend(part.rated)
    return result


def _load_datasets_folder(root: Path, *, saved: bool) -> Any:
    """`load_from_disk` for a save_to_disk folder, `load_dataset` (shards, README configs) else."""
    import datasets  # slow to import; only datasets folders and the hub need it

    quiet = not datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # "Generating train split" bars are not ingest's progress
    try:
        return (datasets.load_from_disk(str(root)) if saved
                else datasets.load_dataset(str(root)))
    except (OSError, ValueError, KeyError, datasets.exceptions.DatasetsError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SourceError(f"{root}: cannot load with datasets ({first_line})") from e
    finally:
        if not quiet:
            datasets.enable_progress_bars()


def _pick_splits(root: Path, loaded: Any, split: Split | None) -> list[tuple[Split, Any]]:
    """(split, Dataset) to read: a lone Dataset is one split; a DatasetDict must hold only train
    and test, unless `split` picks one (a 'validation' split is named, never dropped silently)."""
    if not hasattr(loaded, "keys"):  # a Dataset, not a DatasetDict
        return [(split or "train", loaded)]
    names = list(loaded.keys())
    if split is not None:
        if split not in names:
            raise SourceError(f"{root}: no {split!r} split; splits: {', '.join(names)}")
        return [(split, loaded[split])]
    other = [n for n in names if n not in SPLITS]
    if other:
        raise SourceError(f"{root}: split(s) {', '.join(map(repr, other))} are neither train "
                          "nor test; read one split with --split train or --split test")
    return [(s, loaded[s]) for s in SPLITS if s in names]


def _layout_files(root: Path) -> list[tuple[str, Split, Path]]:
    """(subset, split, path) for the split files in `root` and in its subset folders, sorted."""
    folders = [root] + sorted(d for d in root.iterdir()
                              if d.is_dir() and d.name != _NOT_PREFERENCE)
    found: dict[tuple[str, Split], Path] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            file_split = path.name.split(".", 1)[0]
            if not (path.is_file() and file_format(path) and file_split in SPLITS):
                continue
            key = (folder.name, file_split)
            if key in found:  # e.g. train.jsonl next to train.jsonl.gz: reading both doubles rows
                raise SourceError(f"{folder}: two {file_split} files ({found[key].name}, "
                                  f"{path.name}); keep one")
            found[key] = path
    # train before test within a subset, whatever the file names sort as
    order = sorted(found, key=lambda key: (key[0], SPLITS.index(key[1])))
    return [(subset, s, found[(subset, s)]) for subset, s in order]


def _extend(result: SourceResult, pairs: list[PreferencePair],
            rejected: list[tuple[int, str]], read: int) -> None:
    result.pairs.extend(pairs)
    result.rejected.extend(rejected)
    result.read += read


def _hub_subsets(spec: str) -> list[str]:
    """'hh-rlhf' → all preference subsets; 'hh-rlhf:a,b' → [a, b], validated."""
    if spec == "hh-rlhf":
        return list(HH_SUBSETS)
    subsets = [s.strip() for s in spec.split(":", 1)[1].split(",")]
    for subset in subsets:
        if subset == _NOT_PREFERENCE:
            raise SourceError(f"{spec}: {_NOT_PREFERENCE} is not preference data (no chosen/"
                              f"rejected pairs); subsets: {', '.join(HH_SUBSETS)}")
        if subset not in HH_SUBSETS:
            raise SourceError(f"{spec}: unknown hh-rlhf subset {subset!r}; subsets: "
                              f"{', '.join(HH_SUBSETS)}")
    return subsets


def read_hh_hub(subsets: Sequence[str], *, split: Split | None = None, limit: int | None = None,
                repo: str = HH_REPO, cache_dir: str | None = None) -> SourceResult:
    """Load HH-RLHF subsets with `datasets.load_dataset(repo, data_dir=subset, split=…)`.

    `repo` may be a local directory laid out like the hub repo (tests use one). Both splits unless
    `split` is given; `limit` keeps the first N rows of each (subset, split). An unreachable hub
    raises `SourceError` that points to the local-file form.
    """
    spec = repo if repo != HH_REPO else "hh-rlhf"
    result = SourceResult(spec=spec, pairs=[], read=0, rejected=[])
    for subset in subsets:
        for file_split in (split,) if split else SPLITS:
            dataset = _load_hub_split(repo, subset, file_split, limit=limit, cache_dir=cache_dir)
            pairs, rejected, read = pairs_from_rows(
                dataset, columns=dataset.column_names, name=f"{repo} {subset}/{file_split}",
                split=file_split, subset=subset, reason_prefix=f"{subset}/{file_split}: ")
            _extend(result, pairs, rejected, read)
    return result


def _load_hub_split(repo: str, subset: str, split: Split, *, limit: int | None,
                    cache_dir: str | None) -> Any:
    import datasets  # slow to import; only hub sources need it

    try:
        return datasets.load_dataset(repo, data_dir=subset, cache_dir=cache_dir,
                                     split=f"{split}[:{limit}]" if limit else split)
    except ConnectionError as e:  # what datasets raises offline or without network
        raise SourceError(_offline_message(repo, subset)) from e
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SourceError(f"{repo} {subset}/{split}: cannot load ({first_line})") from e


def _offline_message(repo: str, subset: str) -> str:
    return (f"hh-rlhf:{subset}: the Hugging Face hub is unreachable (offline or no network), so "
            f"{repo} cannot be downloaded; use a local copy instead, e.g. `rewardlab ingest "
            f"path/to/hh-rlhf/{subset}/train.jsonl.gz` or a directory laid out like "
            "github.com/anthropics/hh-rlhf (<subset>/train.jsonl.gz, <subset>/test.jsonl.gz)")


def assign_split_by_hash(pairs: Sequence[PreferencePair],
                         test_fraction: float) -> list[PreferencePair]:
    """Pairs with `split` set to "test" for about `test_fraction` of them, the rest "train".

    The split depends only on the normalized `prompt_text`, so it is the same on every run and
    pairs sharing a prompt never straddle train and test (no prompt leakage).
    """
    return [replace(p, split="test" if _hash_unit(p.prompt_text) < test_fraction else "train")
            for p in pairs]


def _hash_unit(text: str) -> float:
    """Deterministic uniform value in [0, 1) for text, ignoring case and whitespace differences."""
    normalized = " ".join(text.split()).casefold()
    digest = hashlib.sha256(normalized.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
