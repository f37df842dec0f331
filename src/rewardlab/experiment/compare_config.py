"""What `rewardlab compare` is asked to do: its options, presets and conditions, typed and checked.

A light module (no torch, no scipy): the CLI builds its parser from `CompareConfig` without
importing the experiment's machinery, so `rewardlab train` and `--help` start fast.

Lists are tuples and flag sets `FlagSpec`s here; the command line's comma lists and `reviewed:DET`
spellings are parsed where they enter (`cli/experiment.py`, a `--config` file), and the presets are
merged into the `TrainConfig` there, once (`preset_training`).

>>> CompareConfig(seeds=3).seeds
3
>>> config = CompareConfig(conditions=("unfiltered", "clean"), detectors=(FlagSpec("oof_margin"),),
...                        training=preset_training("quick", model="bow", epochs=2))
>>> config.conditions, str(config.detectors[0]), config.training.model, config.training.epochs
(('unfiltered', 'clean'), 'oof_margin', 'bow', 2)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from rewardlab.errors import RewardlabError
from rewardlab.flags.selection import CLEAN_DETECTORS, FlagSpec
from rewardlab.training.train_config import TrainConfig

__all__ = ["CompareConfig", "Condition", "Preset", "PRESETS", "CONDITIONS", "REVIEWED_CONDITION",
           "AA_CONDITION", "AA_SEED_OFFSET", "RatedCondition", "RATED_CONDITIONS", "RATED_GROUPS",
           "COMPARE_TRAIN_FIELDS", "RATED_TRAIN_FIELDS", "preset_training", "train_config_for"]


# Settings per preset; an option given on the command line wins. `seed` is the original notebook's
# (a GPU job); `quick` finishes on a 2-core CPU in minutes; `strength` ranks pairs by cross-fitted
# preference strength and runs the dose-response curve within ~20 minutes on a 2-core CPU for the
# 1,512-pair sample (timings: docs/architecture.md, "compare --preset strength").
class Preset(TypedDict):
    model: str
    max_pairs: int | None  # None = all train pairs
    seeds: int
    detectors: NotRequired[tuple[FlagSpec, ...]]  # define "flagged" for the clean conditions
    rank_by: NotRequired[str]  # the dose-response ranking
    fractions: NotRequired[tuple[float, ...]]
    epochs: NotRequired[int]
    max_length: NotRequired[int]
    lr: NotRequired[float]  # for the preset's own backbone only: another --model keeps its default


# quick's lr, measured on the sample (1,030 train / 482 test pairs, 1 epoch, seed 0; issue 35): at
# MiniLM's default 2e-5 the run barely trains (train loss 0.690 vs ln 2 = 0.693, test NLL 0.682,
# mean test margin 0.02, 61.2% test accuracy); at 1e-4, in the same time, train loss 0.669, test
# NLL 0.631, margin 0.26, 63.5% (over "prefer the shorter", 57.7%: +5.8 points instead of +3.5)
PRESETS: dict[str, Preset] = {
    "quick": {"model": "minilm", "max_pairs": 4000, "seeds": 1, "lr": 1e-4},
    "seed": {"model": "distilbert-base-uncased", "max_pairs": None, "seeds": 1},
    # bow: ~5 s a run on the sample (61% test accuracy at max_length 512, MiniLM fine-tuning ~90 s),
    # so 5 seeds × (3 conditions + 4 fractions × 2 arms) = 55 runs fit next to the detector
    "strength": {"model": "bow", "max_pairs": None, "seeds": 5, "epochs": 1, "max_length": 512,
                 "detectors": (FlagSpec("preference_strength"),), "rank_by": "preference_strength",
                 "fractions": (0.05, 0.1, 0.2, 0.3)},
}
# clean-reviewed removes only the flags reviewers confirmed (`rewardlab review`); it joins a plan
# with `clean` by itself once reviewers confirmed any flag of the experiment's detectors
REVIEWED_CONDITION = "clean-reviewed"
# aa, the A/A control: the unfiltered data again, trained with independent seeds (each seed + this
# offset, far from any seed count), compared with unfiltered like any condition; the difference
# is what the seeds alone produce, the noise floor of the setup (docs/statistics.md)
AA_CONDITION = "aa"
AA_SEED_OFFSET = 1_000_000
CONDITIONS: tuple[str, ...] = ("unfiltered", "clean", "random", REVIEWED_CONDITION, AA_CONDITION)




@dataclass(frozen=True)
class RatedCondition:
    """A condition on rated data (issue 32): one `train_on_rated` run per seed on the training
    prompts, with this tie handling and ranking use, scored like every condition on the test
    prompts' decided pairs and compared with its group's reference."""

    name: str
    group: str  # "tie handling" | "ranking use": whose reference it is compared with
    reference: str  # the group's reference condition (what users do today)
    ties: str  # TrainConfig.ties
    ranking: str  # TrainConfig.ranking
    best_worst: bool  # trains on each prompt's best and worst response only
    description: str


def _rated(name: str, group: str, reference: str, ties: str, ranking: str, description: str,
           *, best_worst: bool = False) -> tuple[str, RatedCondition]:
    return name, RatedCondition(name, group, reference, ties, ranking, best_worst, description)


# The ranking conditions drop ties (the tie reference), so all-pairs is ties-drop's training under
# its own name: each group stands alone, and a plan of one group needs nothing of the other.
RATED_CONDITIONS: dict[str, RatedCondition] = dict([
    _rated("ties-drop", "tie handling", "ties-drop", "drop", "pairs",
           "every decided pair of each prompt; tied pairs dropped (what users do today)"),
    _rated("ties-soft", "tie handling", "ties-drop", "soft", "pairs",
           "every pair of each prompt; a tied pair a soft target 1/2"),
    _rated("ties-model", "tie handling", "ties-drop", "model", "pairs",
           "every pair of each prompt; ties an outcome of a BT model with ties (Davidson), its "
           "tie parameter trained along"),
    _rated("best-worst", "ranking use", "best-worst", "drop", "pairs",
           "one pair per prompt: its best vs its worst response (UltraFeedback binarized)",
           best_worst=True),
    _rated("all-pairs", "ranking use", "best-worst", "drop", "pairs",
           "all K(K-1)/2 decided pairs of each prompt, each response forwarded once; ties dropped"),
    _rated("listwise", "ranking use", "best-worst", "drop", "listwise",
           "the Plackett-Luce likelihood of each prompt's ranking by score"),
])
# group -> its reference, in the order the report shows them
RATED_GROUPS: dict[str, str] = {"tie handling": "ties-drop", "ranking use": "best-worst"}


# The rated-data training options (issue 32): compare sets them per condition (RATED_CONDITIONS),
# so they are no training option of compare's.
RATED_TRAIN_FIELDS: tuple[str, ...] = ("ties", "tie_model", "ranking", "margin_from_scores")
# The TrainConfig fields compare does not take as training options: each run's seed (its own, from
# --seeds) and the rated-data options. Every other one (--model, --epochs, --lr, --lora-r, ...) is
# settable from compare.
COMPARE_TRAIN_FIELDS: tuple[str, ...] = ("seed", *RATED_TRAIN_FIELDS)


def preset_training(preset: str = "quick", **options: Any) -> TrainConfig:
    """The TrainConfig of `preset` with `options` (TrainConfig fields: the command line's, a
    --config file's) over it, seed 0 (each run sets its own). The preset's lr is tuned for its own
    backbone, so it applies to that one only. The CLI calls it once, at its edge.

    >>> preset_training().model, preset_training().lr, preset_training(model="bow").lr
    ('minilm', 0.0001, None)
    >>> strength = preset_training("strength", batch_size=4)
    >>> strength.model, strength.max_length, strength.batch_size
    ('bow', 512, 4)
    """
    if "seed" in options:  # two homes for one setting would leave the reader guessing which won
        raise RewardlabError("training option 'seed' is compare's own: set --seeds (every run "
                             "has its own seed)")
    rated = [name for name in RATED_TRAIN_FIELDS if name in options]
    if rated:
        raise RewardlabError(f"training option '{rated[0]}' is set per condition by compare: "
                             f"--conditions {','.join(RATED_CONDITIONS)} on rated data")
    chosen = PRESETS[preset]
    values: dict[str, Any] = {"model": chosen["model"]}
    if "epochs" in chosen:
        values["epochs"] = chosen["epochs"]
    if "max_length" in chosen:
        values["max_length"] = chosen["max_length"]
    if "lr" in chosen and options.get("model", chosen["model"]) == chosen["model"]:
        values["lr"] = chosen["lr"]  # tuned for that backbone; bow's 3e-3 is another scale
    return TrainConfig(**{**values, **options, "seed": 0})


@dataclass(frozen=True)
class Condition:
    """One condition of the experiment: its name, which pairs it keeps and what it does to them."""

    name: str  # e.g. "clean-remove"
    mode: str  # all | clean | random
    treatment: str | None


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class CompareConfig:
    """Everything `rewardlab compare` needs; saved in results.json.

    Each field's `help` metadata is the CLI's help for its flag. Lists are tuples, flag sets
    `FlagSpec`s; `training` is the TrainConfig every run trains with (the CLI merges the preset
    into it, once: `preset_training`).

    Parameters
    ----------
    train : str, default "hh-rlhf-sample"
        The train source (`read_source`'s specs): the embedded HH-RLHF sample, "hh-rlhf", a file.
    test : str or None, default None
        A separate test source; None: the train source's test split.
    test_fraction : float or None, default None
        Carve a test split of this share from a single-split train source, by prompt hash.
    preset : {"quick", "seed", "strength"}, default "quick"
        The defaults of seeds, pairs, detectors and dose-response to start from (its training
        options are `preset_training(preset)`'s, which the CLI merges into `training`).
    seeds : int or None, default None
        Seeds per condition; None: the preset's (1).
    conditions : tuple of str, default ("unfiltered", "clean", "random")
        Any of unfiltered, clean, random, clean-reviewed, aa (the A/A control); or, on rated
        data, any of `RATED_CONDITIONS` (tie handling and ranking use; not mixed with the others).
    treatments : tuple of str, default ("remove",)
        What clean does to flagged pairs: any of remove, flip, soft.
    detectors : tuple of FlagSpec or None, default None
        The flag sets that define "flagged" (`FlagSpec(DET, reviewed_only=True)`: the flags of DET
        that reviewers confirmed, `reviewed:DET` on the command line); None: the preset's, else
        the default clean set.
    max_pairs : int or None, default None
        Train pairs kept, stratified by subset; 0 = all; None: the preset's.
    name : str or None, default None
        The dataset's name in the store; None: derived from the train source and test fraction.
    save_checkpoints : bool, default False
        Keep every run's checkpoint under out_dir/runs.
    fractions : tuple of float or None, default None
        Dose-response: shares of the training pairs to treat, increasing, each in (0, 1) (needs
        `rank_by`); None: the preset's.
    rank_by : str or None, default None
        Dose-response: the detector whose score ranks the pairs to treat.
    ablation : bool, default False
        Also compare each detector's own clean condition with its own size-matched random control.
    reuse_runs : bool, default True
        Reuse every run the store holds with the same id, so a killed compare resumes.
    workers : int, default 1
        Runs trained at once, each in a process of its own (1: one after another, in this one).
    ray : str or None, default None
        Train each run as a Ray task: "local" starts a cluster here with `workers` CPUs; an
        address ("auto", "HOST:6379", "ray://HOST:10001") joins one (needs a PostgreSQL store).
    gpus_per_run : int or None, default None
        GPUs each run gets, assigned by the executor, never shared; None: 1 where CUDA GPUs are,
        0 elsewhere. More than 1: each run is one accelerate job of that many processes, one per
        GPU, sharing each step's `grad_accum` micro-batches (which it must divide): the same steps
        as the one-process run (`experiment/run_job.py`, docs/distributed.md).
    retries : int, default 1
        How many times a failed run (a worker killed, a crash) is tried again before it is
        reported while the others go on.
    training : TrainConfig, default preset_training()
        The TrainConfig every run trains with (the quick preset's: minilm at lr 1e-4), its seed
        replaced by the run's. It does not follow `preset`: for another preset's backbone pass
        `training=preset_training("strength")`.
    """

    train: str = field(default="hh-rlhf-sample", metadata=_help(
        "train source (see `rewardlab ingest`): the embedded HH-RLHF sample 'hh-rlhf-sample' by "
        "default (offline, split 70/30); 'hh-rlhf' for the full dataset from the hub (the sample "
        "when the hub is unreachable)"))
    test: str | None = field(default=None, metadata=_help("separate test source"))
    test_fraction: float | None = field(default=None, metadata=_help(
        "carve a test split from a single-split train source by prompt hash"))
    preset: str = field(default="quick", metadata=_help(
        "quick (CPU minutes), seed (the notebook's) or strength (preference strength + "
        "dose-response, CPU ≤ 20 min on the sample)", choices=list(PRESETS)))
    seeds: int | None = field(default=None, metadata=_help("seeds per condition (preset: 1)"))
    conditions: tuple[str, ...] = field(default=("unfiltered", "clean", "random"), metadata=_help(
        "comma list of unfiltered, clean, random, clean-reviewed (remove only the flags reviewers "
        "confirmed; added by itself next to clean once reviewers confirmed any), aa (the A/A "
        "control: unfiltered again with independent seeds, compared with unfiltered; needs it); "
        "default unfiltered,clean,random. On rated data (K responses, scores, ties) instead: tie "
        "handling ties-drop (the reference), ties-soft, ties-model; ranking use best-worst (the "
        "reference), all-pairs, listwise"))
    treatments: tuple[str, ...] = field(default=("remove",), metadata=_help(
        "what clean does to flagged pairs: comma list of remove, flip, soft (default remove)"))
    detectors: tuple[FlagSpec, ...] | None = field(default=None, metadata=_help(
        "comma list of the detectors whose flags define 'flagged'; not given: the default clean "
        f"set, as `train --select clean` ({', '.join(CLEAN_DETECTORS)}); an empty list is "
        "refused; reviewed:DET = the flags of DET that reviewers confirmed"))
    max_pairs: int | None = field(default=None, metadata=_help(
        "train pairs, stratified by subset (quick: 4000; 0 = all)"))
    name: str | None = field(default=None, metadata=_help("dataset name in the store"))
    save_checkpoints: bool = field(default=False, metadata=_help(
        "keep every run's checkpoint under DIR/runs"))
    fractions: tuple[float, ...] | None = field(default=None, metadata=_help(
        "dose-response: comma list of shares of the training pairs to treat with the first "
        "--treatments, e.g. 0.05,0.1,0.2,0.3 (needs --rank-by; preset strength sets both)"))
    rank_by: str | None = field(default=None, metadata=_help(
        "dose-response: the detector whose score (higher = more suspect) ranks the pairs; each "
        "fraction treats its top pairs and, as the control, as many random ones"))
    ablation: bool = field(default=False, metadata=_help(
        "also train each detector's own clean condition against its own size-matched random "
        "control (first treatment only; off by default)"))
    reuse_runs: bool = field(default=True, metadata=_help(
        "reuse every run the store already holds with the same id (same pairs, labels, training "
        "options, data and rewardlab version), so a killed compare resumes where it stopped; "
        "--no-reuse-runs trains every run again"))
    # How the runs are carried out, not what they are: run ids and results do not depend on them
    workers: int = field(default=1, metadata=_help(
        "runs trained at once, each in its own process with its share of the cores (and its own "
        "GPUs, --gpus-per-run); 1: one after another in this process"))
    ray: str | None = field(default=None, metadata=_help(
        "train each run as a Ray task (pip install 'rewardlab[ray]'): 'local' starts a Ray "
        "cluster on this machine with --workers CPUs; an address (auto, HOST:6379, "
        "ray://HOST:10001) joins a running one, whose workers write to the store themselves "
        "(a PostgreSQL --db)"))
    gpus_per_run: int | None = field(default=None, metadata=_help(
        "GPUs each run gets, assigned by the executor, never two runs on one (default: 1 where "
        "CUDA GPUs are, 0 elsewhere); G > 1: each run is one `accelerate launch --multi_gpu "
        "--num_processes G` job on its G GPUs, the G processes sharing each step's --grad-accum "
        "micro-batches (give a multiple of G): the same steps as one process; --workers N needs "
        "N × G GPUs"))
    retries: int = field(default=1, metadata=_help(
        "times a failed run (its worker killed, a crash) is tried again before it is reported; "
        "the other runs go on, and the finished ones stay stored"))
    # The CLI builds it from the preset and the training options given (`preset_training`)
    training: TrainConfig = field(default_factory=preset_training, metadata=_help(
        "the TrainConfig every run trains with, its seed replaced by the run's"))

    def __post_init__(self) -> None:
        """Refuse option values that cannot mean anything, whoever builds the config (the CLI or
        Python): checked before any data is read or model trained."""
        for name, minimum in (("seeds", 1), ("max_pairs", 0), ("workers", 1), ("gpus_per_run", 0),
                              ("retries", 0)):
            value = getattr(self, name)
            if value is not None and value < minimum:  # None = the preset's value
                raise RewardlabError(f"--{name.replace('_', '-')} must be at least {minimum} "
                                     f"(got {value})")
        tf = self.test_fraction
        if tf is not None and not 0.0 < tf < 1.0:  # NaN fails this too
            raise RewardlabError(f"--test-fraction must be between 0 and 1, exclusive (got {tf})")
        if not isinstance(self.training, TrainConfig):
            raise RewardlabError(f"training: expected a TrainConfig (got {self.training!r}); "
                                 "preset_training(PRESET, **options) builds one")
        self._check_lists()
        self._check_execution()
        self._check_rated()

    def _check_rated(self) -> None:
        """Tie and ranking conditions train on rated prompts with no flags: what would give them
        another meaning (pair conditions, flags, dose-response, several processes a run) is
        refused in one line, before any work."""
        rated = [c for c in self.conditions if c in RATED_CONDITIONS]
        if not rated:
            return
        pair = [c for c in self.conditions if c not in RATED_CONDITIONS and c in CONDITIONS]
        if pair:
            raise RewardlabError(f"--conditions: {rated[0]} trains on rated prompts and {pair[0]} "
                                 "on pairs with flags; they have no common reference: run them "
                                 "in two compares")
        given = [flag for flag, value in (("--fractions", self.fractions),
                                          ("--rank-by", self.rank_by),
                                          ("--detectors", self.detectors),
                                          ("--ablation", self.ablation or None)) if value]
        if given:
            raise RewardlabError(f"{given[0]}: the tie and ranking conditions ({rated[0]}) use no "
                                 "detector flags; leave it out, or run the flag conditions in "
                                 "another compare")
        missing = [c for c in rated if RATED_CONDITIONS[c].reference not in self.conditions]
        if missing:
            ref = RATED_CONDITIONS[missing[0]].reference
            raise RewardlabError(f"--conditions: {missing[0]} is compared with {ref}, the "
                                 f"{RATED_CONDITIONS[ref].group} reference: add {ref}")

    def _check_lists(self) -> None:
        """Lists are tuples (a list is taken as one) of the right items: a comma string is the
        command line's spelling, and read as a sequence it would be its characters."""
        for name, item in (("conditions", str), ("treatments", str), ("detectors", FlagSpec),
                           ("fractions", float)):
            value = getattr(self, name)
            if value is None and name in ("detectors", "fractions"):
                continue  # the preset's, else the default
            if not isinstance(value, (tuple, list)) or not all(
                    isinstance(v, item) or (item is float and type(v) is int) for v in value):
                raise RewardlabError(f"{name}: expected a tuple of {item.__name__} (got "
                                     f"{value!r}); comma lists and reviewed:DET are the command "
                                     "line's spelling")
            setattr(self, name, tuple(value))
        if self.detectors is not None and not self.detectors:
            raise RewardlabError("--detectors names no detector; leave it out for the default "
                                 f"clean set ({', '.join(CLEAN_DETECTORS)})")

    def _check_execution(self) -> None:
        """What the executor cannot do as asked, said before any work (`experiment/executor.py`)."""
        gpus, accum = self.gpus_per_run or 0, self.training.grad_accum
        if gpus > 1 and accum % gpus:  # G processes share each step's micro-batches: same steps
            raise RewardlabError(f"--gpus-per-run {gpus}: the {gpus} processes of a run share "
                                 f"each optimizer step's --grad-accum {accum} micro-batches (so "
                                 "the run takes the one-process run's steps); give a --grad-accum "
                                 f"divisible by {gpus}")
        if self.ray is not None and not self.ray.strip():
            raise RewardlabError("--ray: expected 'local' or a Ray address (auto, HOST:6379, "
                                 "ray://HOST:10001)")


def train_config_for(config: CompareConfig, seed: int) -> TrainConfig:
    """The TrainConfig every run of this experiment trains with, for one seed.

    >>> train_config_for(CompareConfig(training=preset_training(model="bow")), 3).seed
    3
    """
    return dataclasses.replace(config.training, seed=seed)
