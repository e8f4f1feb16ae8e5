"""Model specs: ``SOURCE:LOCATION[+METHOD:ARGS]...`` — one record for baseline and candidates alike (parsed by
``registry.parse_spec``, which knows the sources).

``bundled:smollm2-135m``, ``hf:/path/to/folder``, ``hf:org/name``, ``bundled:smollm2-135m+rtn:w4g64``.
A candidate may start with ``+`` to mean "the baseline, compressed": ``+rtn:w8``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from flipscope.compress import CompressionConfig


@dataclass(frozen=True)
class ModelSpec:
    source: str
    location: str
    compression: tuple[CompressionConfig, ...] = ()

    def label(self) -> str:
        return f"{self.source}:{self.location}" + "".join(f"+{c.label()}" for c in self.compression)

    def base(self) -> ModelSpec:
        return replace(self, compression=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "location": self.location,
            "compression": [c.to_dict() for c in self.compression],
        }

    def __str__(self) -> str:
        return self.label()
