"""Calibration batches for methods that look at activations: offline, from CPython's own documentation.

``pydoc_data.topics`` (~465k characters of English prose, the default corpus: ``tasks.corpus.calibration_text``)
ships with every Python, so calibration never needs a download. The default set: the first ``samples`` × ``length``
tokens, cut into ``samples`` rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

#: The text the calibrated methods (GPTQ, AWQ, SmoothQuant, Wanda, quanto) see: the default corpus,
#: ``tasks.corpus.DEFAULT_CORPUS`` (written out so that ``import flipscope.compress`` does not load ``flipscope.tasks``;
#: tests/test_compress_methods.py checks the two are equal).
CALIBRATION_SOURCE = "python:pydoc_data.topics"


def check_calibration(samples: int, length: int, method: str) -> None:
    """Refuse a calibration set too small to run: at least one sample of two tokens."""
    if samples < 1 or length < 2:
        raise FlipscopeError(f"{method} needs at least one calibration sample of two tokens")


def calibration_batch(tokenizer: Any, samples: int, length: int) -> torch.Tensor:
    """Token ids [samples, length] from the calibration text."""
    import torch

    from flipscope.tasks.corpus import calibration_text

    if tokenizer is None:
        raise FlipscopeError("this method needs the model's tokenizer for calibration text")
    ids = tokenizer.encode(calibration_text()[: samples * length * 12], add_special_tokens=False)
    need = samples * length
    if len(ids) < need:
        raise FlipscopeError(f"calibration text gave {len(ids)} tokens, {need} needed", fix="use fewer samples")
    return torch.tensor(ids[:need]).view(samples, length)
