"""Whether two run directories hold the same numbers: every Parquet file in one is in the other, with the same
columns, rows and values (exactly: no tolerance). Prints one line per file; exits 1 on the first difference.

Usage: python benchmarks/same_results.py RUN_A RUN_B
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main(a: Path, b: Path) -> int:
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    if not files:
        print(f"{a}: no Parquet files")
        return 1
    missing = sorted({p.relative_to(b) for p in b.rglob("*.parquet")} ^ set(files))
    if missing:
        print(f"only in one of the two: {', '.join(map(str, missing))}")
        return 1
    for rel in files:
        left, right = pd.read_parquet(a / rel), pd.read_parquet(b / rel)
        try:
            pd.testing.assert_frame_equal(left, right, check_exact=True)
        except AssertionError as exc:
            print(f"{rel}: DIFFERENT\n{exc}")
            return 1
        print(f"{rel}: identical ({len(left)} rows × {len(left.columns)} columns)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
