"""Models: one backend per module behind the small ``Backend`` protocol; specs name them."""

from flipscope.models.base import Backend, ModelInfo, OptionScores, RowSink
from flipscope.models.options import LoadOptions
from flipscope.models.registry import check_compression, fingerprint, load_backend, parse_models, parse_spec
from flipscope.models.sources import SOURCES, Source, register_source
from flipscope.models.spec import ModelSpec

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
