"""Models: one backend per module behind the small ``Backend`` protocol; specs name them."""

from flipscope.models.base import Backend, ModelInfo, OptionScores, RowSink
from flipscope.models.registry import (
    SOURCES,
    LoadOptions,
    Source,
    check_compression,
    fingerprint,
    load_backend,
    parse_models,
    register_source,
)
from flipscope.models.spec import ModelSpec, parse_spec

__all__ = [
    "SOURCES",
    "Backend",
    "LoadOptions",
    "ModelInfo",
    "ModelSpec",
    "OptionScores",
    "RowSink",
    "Source",
    "check_compression",
    "fingerprint",
    "load_backend",
    "parse_models",
    "parse_spec",
    "register_source",
]
