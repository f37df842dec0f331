"""The results document's types (report/results.py) say what run_comparison writes, in its order."""

from __future__ import annotations

import dataclasses

from rewardlab.experiment.compare import CompareConfig
from rewardlab.report.results import ResultsConfig, ResultsDocument


def test_results_config_lists_every_compare_config_field() -> None:
    # run_comparison writes {**asdict(CompareConfig), ..., "train_config": ...}; asdict is untyped
    fields = [f.name for f in dataclasses.fields(CompareConfig)]
    # model, epochs, max_length: the TrainConfig's, kept as keys for readers of results.json
    assert list(ResultsConfig.__annotations__) == [*fields, "model", "epochs", "max_length",
                                                   "train_config"]


def test_results_document_keys_in_written_order() -> None:
    assert list(ResultsDocument.__annotations__) == [
        "rewardlab_version", "created", "config", "data", "flags", "conditions", "comparisons",
        "rated", "dose_response", "ablation", "strength", "multiplicity", "teaching", "notebook_table",
        "verdict", "seconds", "runs_planned", "runs_reused"]
    # the newer blocks are optional, so results.json files written before them still type-check
    assert ResultsDocument.__optional_keys__ == frozenset(
        {"rated", "dose_response", "ablation", "strength", "multiplicity", "teaching",
         "runs_planned", "runs_reused"})
