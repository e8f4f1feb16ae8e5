"""Persistence: cached model passes and run directories."""

from flipscope.store.passes import PassResult, PassStore, ReferenceRows, scores_from_frame
from flipscope.store.run import (
    ModelEntry,
    NoiseFloorEntry,
    RunFile,
    SamplingEntry,
    Settings,
    TaskEntry,
    read_run,
    records_frame,
    write_run,
)

__all__ = [
    "ModelEntry",
    "NoiseFloorEntry",
    "PassResult",
    "PassStore",
    "ReferenceRows",
    "RunFile",
    "SamplingEntry",
    "Settings",
    "TaskEntry",
    "read_run",
    "records_frame",
    "scores_from_frame",
    "write_run",
]
