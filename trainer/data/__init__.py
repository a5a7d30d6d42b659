"""Training data: read, detect the format, validate every record, normalise for TRL.

`python -m trainer check-data FILE` and the trainer itself use the same code, so a file that
passes the check is a file the trainer accepts.

Sources: `.jsonl`, `.jsonl.gz`, `.json` (an array of objects, or JSON lines under a `.json`
name), `.csv`, `.parquet`, a folder written by `datasets.save_to_disk`, or a Hugging Face Hub
dataset id (online only). Files are streamed: a check holds the first few examples, the listed
problems and (with a model) a bounded random sample for the token statistics, never the file.

Formats, detected from the columns unless given: `messages` (chat messages with role/content),
`sharegpt` (`conversations` with from/value), `alpaca` (instruction/input/output),
`prompt_completion` and `text`. ShareGPT and Alpaca become chat messages; the records handed
to TRL are `{"messages": [...]}`, `{"prompt": str, "completion": str}` or `{"text": str}`.

Every problem is reported, each with where it is (a 1-based file line; the record number in a
JSON array; the row number in parquet, saved or Hub datasets) and what is wrong.

The package, by job: `readers` (open a source, stream its items), `formats` (detect, validate,
normalise), `tokens` (token statistics, the rendered example), `report` (the report while it
is filled, `DataError`), `check` (`check_dataset` and the `check-data` command) and `loading`
(the trainer's `load_training_data`). The report types live in `trainer.reports`.

Heavy libraries (transformers, datasets, pyarrow) are imported inside the functions that need
them; importing this package is cheap.
"""

from __future__ import annotations

from trainer.data.check import check_dataset, main
from trainer.data.formats import FORMATS, record_kind
from trainer.data.loading import TrainingData, load_training_data
from trainer.data.report import MAX_LISTED_PROBLEMS, DataError
from trainer.data.tokens import DEFAULT_TOKEN_SAMPLE
from trainer.reports import DataProblem, DataReport, RenderedExample, TokenStats

__all__ = [
    "DEFAULT_TOKEN_SAMPLE",
    "FORMATS",
    "MAX_LISTED_PROBLEMS",
    "DataError",
    "DataProblem",
    "DataReport",
    "RenderedExample",
    "TokenStats",
    "TrainingData",
    "check_dataset",
    "load_training_data",
    "main",
    "record_kind",
]
