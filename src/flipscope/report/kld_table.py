"""Terminal rendering of a `flipscope kld` run: one overview row per candidate, then each candidate's details."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.table import Table

from flipscope.metrics.corpus_stats import CorpusSummary
from flipscope.report.formatting import num
from flipscope.store.kld_run import KLDRunFile, KLDRunSettings, read_kld_run, summarize_positions

OVERVIEW = (
    "candidate",
    "PPL(B)",
    "PPL(C)",
    "ln PPL ratio",
    "KL mean",
    "KL p99",
    "KL max",
    "rev KL",
    "RMS Δp%",
    "same top%",
)


def load_kld_run(folder: str | Path) -> KLDRunFile:
    """Read a kld run and recompute every summary from ``positions.parquet``."""
    run, frame = read_kld_run(Path(folder))
    summary = {}
    for label, part in frame.groupby("candidate", sort=False):
        summary[str(label)] = summarize_positions({c: part[c].to_numpy() for c in part.columns}, str(label))
    return run.model_copy(update={"summary": summary})


def _pm(value: float, err: float, digits: int = 4) -> str:
    return f"{num(value, digits)} ± {num(err, digits)}"


def overview(run: KLDRunFile) -> Table:
    s = run.settings
    title = (
        f"baseline {run.baseline['spec']} · corpus {s.corpus} · ctx {s.ctx} · {s.windows} windows · "
        f"{s.positions} positions · store {s.store}"
    )
    table = Table(title=title, title_justify="left", header_style="bold")
    marked = {"KL mean": _label("KL mean", s.kl_forward), "rev KL": _label("rev KL", s.kl_reverse),
              "KL p99": _label("KL p99", s.kl_positions), "KL max": _label("KL max", s.kl_positions)}  # fmt: skip
    for name in OVERVIEW:
        table.add_column(marked.get(name, name), justify="left" if name == "candidate" else "right")
    for label, x in run.summary.items():
        table.add_row(
            label,
            num(x.ppl_base.value, 3),
            num(x.ppl_cand.value, 3),
            _pm(x.ln_ppl_ratio.value, x.ln_ppl_ratio.err),
            _pm(x.kl_mean.value, x.kl_mean.err),
            num(x.kl_percentiles["99"]),
            num(x.kl_max),
            num(x.kl_reverse_mean.value),
            f"{x.dp_rms.value * 100:.2f}",
            f"{x.same_top.value * 100:.2f} ± {x.same_top.err * 100:.2f}",
        )
    return table


def _label(name: str, kind: str) -> str:
    """``name`` with what its numbers are (``KLDRunSettings.kl_forward`` …), unless they are exact."""
    return name if kind == "exact" else f"{name} ({kind})"


def details(label: str, x: CorpusSummary, settings: KLDRunSettings) -> Table:
    """llama.cpp's statistics block for one candidate, and what goes beyond it."""
    table = Table(title=label, title_justify="left", show_header=False, box=None, padding=(0, 2))
    table.add_column(justify="left")
    table.add_column(justify="right")
    rows = [
        ("PPL(C) / PPL(B)", _pm(x.ppl_ratio.value, x.ppl_ratio.err)),
        ("PPL(C) − PPL(B)", _pm(x.ppl_diff.value, x.ppl_diff.err)),
        ("Cor(ln PPL(B), ln PPL(C))", num(x.ln_ppl_correlation)),
        (_label("KL(B‖C) mean ± err", settings.kl_forward), _pm(x.kl_mean.value, x.kl_mean.err, 6)),
        (
            _label("KL σ / max / min", settings.kl_positions),
            f"{num(x.kl_std, 6)} / {num(x.kl_max, 6)} / {num(x.kl_min, 6)}",
        ),
        (
            _label("KL percentiles", settings.kl_positions),
            "  ".join(f"{p}%: {num(v, 5)}" for p, v in x.kl_percentiles.items()),
        ),
        (_label("KL(C‖B) mean", settings.kl_reverse), _pm(x.kl_reverse_mean.value, x.kl_reverse_mean.err, 6)),
        (
            "Δp mean, RMS",
            f"{x.dp_mean.value * 100:+.3f}% ± {x.dp_mean.err * 100:.3f}%, RMS {x.dp_rms.value * 100:.3f}%",
        ),
        ("Δp max / min", f"{x.dp_max * 100:+.2f}% / {x.dp_min * 100:+.2f}%"),
        ("Δp percentiles", "  ".join(f"{p}%: {v * 100:+.2f}%" for p, v in x.dp_percentiles.items())),
        ("top-k agreement", "  ".join(f"{k}: {v * 100:.1f}%" for k, v in x.topk_agreement.items())),
        (
            "KL by baseline top p",
            "  ".join(f"[{b.low:.1f},{b.high:.1f}) {num(b.kl_mean, 4)} (n {b.n})" for b in x.kl_by_confidence if b.n),
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def render_kld_run(run: KLDRunFile) -> Group:
    parts: list[object] = [overview(run)]
    for label, x in run.summary.items():
        parts.append(details(label, x, run.settings))
        if x.excluded_windows:
            shown = ", ".join(map(str, x.excluded_windows[:8])) + (" …" if len(x.excluded_windows) > 8 else "")
            parts.append(
                f"[yellow]  ! {label}: {len(x.excluded_windows)} windows left out of every number, NaN or infinite "
                f"log-probabilities in them (windows {shown}; all in run.json)[/yellow]"
            )
        top = run.most_divergent.get(label, [])[:3]
        if top:
            parts.append(f"  {_label('most divergent positions', run.settings.kl_positions)}:")
        for d in top:
            parts.append(f"  KL {d.kl:.3f} at window {d.window} pos {d.position}: …{d.context!r} → {d.token!r}")
    parts.extend(f"note: {n}" for n in run.notes)
    return Group(*parts)  # type: ignore[arg-type]


def print_kld_run(run: KLDRunFile, console: Console | None = None) -> None:
    (console or Console()).print(render_kld_run(run))
