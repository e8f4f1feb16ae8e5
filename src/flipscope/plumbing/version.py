"""The installed flipscope's version, for the files it writes."""

from __future__ import annotations


def flipscope_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flipscope")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
