"""The installed flipscope's version and those of the libraries it runs on, for the files it writes."""

from __future__ import annotations


def flipscope_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flipscope")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def library_versions() -> dict[str, str]:
    import contextlib
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("flipscope", "torch", "transformers", "numpy", "pandas", "pyarrow", "gguf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out
