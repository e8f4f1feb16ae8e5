"""``flipscope attribute`` and ``flipscope advise``."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import click

_CORPUS = [
    click.option(
        "--corpus",
        default=None,
        help="Text to measure KL on (default: attribute: kld's offline corpus; "
        "advise: its calibration corpus, mixed:pydoc+stdlib+mmlu).",
    ),
    click.option(
        "--chunks",
        default=8,
        show_default=True,
        help="Windows of --ctx tokens in every KL pass (the first N of --corpus).",
    ),
    click.option("--ctx", default=512, show_default=True, help="Tokens per window."),
    click.option(
        "--scored-fraction",
        default=0.5,
        show_default=True,
        help="Share of each window scored, from its end (as kld; more positions per pass).",
    ),
    click.option("--device", default="auto", show_default=True),
    click.option("--dtype", default="float32", show_default=True),
]


def _corpus_options(f):  # type: ignore[no-untyped-def]
    """The corpus options, handed to the command as one ``ablation`` settings object."""

    @functools.wraps(f)
    def command(*args, corpus, chunks, ctx, scored_fraction, device, dtype, **kwargs):  # type: ignore[no-untyped-def]
        return f(*args, ablation=_ablation(corpus, chunks, ctx, scored_fraction, device, dtype), **kwargs)

    for option in reversed(_CORPUS):
        command = option(command)
    return command


def _unit_options(default: str):  # type: ignore[no-untyped-def]
    def wrap(f):  # type: ignore[no-untyped-def]
        f = click.option("--span", type=click.IntRange(min=1), help="With --by module: consecutive blocks per unit "
                         "(e.g. 5: v_proj of blocks 0-4, 5-9, …; default: all blocks).")(f)  # fmt: skip
        return click.option(
            "--by",
            type=click.Choice(["block", "module", "linear"]),
            default=default,
            show_default=True,
            help="Unit: a decoder block, a module kind (q/k/v/o/gate/up/down) across blocks, or one Linear.",
        )(f)

    return wrap


def _integers(option: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"{option} {text!r}: comma-separated integers") from exc


def _window_range(option: str, text: str | None) -> tuple[int, int] | None:
    """``A:B``: windows A … B−1."""
    if text is None:
        return None
    first, _, end = text.partition(":")
    try:
        a, b = int(first), int(end)
    except ValueError:
        a, b = -1, -1
    if not 0 <= a < b:
        raise click.BadParameter(f"{option} {text!r}: windows A:B (A … B−1), 0 ≤ A < B, e.g. 0:8")
    return a, b


def _ablation(corpus: str | None, chunks: int, ctx: int, fraction: float, device: str, dtype: str) -> Any:
    from flipscope.runs.attribute import AblationSettings

    if chunks < 1 or ctx < 8 or not 0 < fraction <= 1:
        raise click.BadParameter("--chunks must be ≥ 1, --ctx ≥ 8 and --scored-fraction in (0, 1]")
    return AblationSettings(corpus=corpus, chunks=chunks, ctx=ctx, scored_fraction=fraction, device=device,
                            dtype=dtype)  # fmt: skip


@click.command("attribute")
@click.argument("baseline")
@click.argument("candidate")
@_unit_options("block")
@click.option("--tasks", default="", help="Also measure task flips for the top units (comma-separated task names).")
@click.option("--limit", default=200, show_default=True, help="Items per task.")
@click.option("--top", default=5, show_default=True, help="Units whose flips are measured.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/attribute-<time>).")
@_corpus_options
def attribute_cmd(
    baseline: str,
    candidate: str,
    by: str,
    span: int | None,
    tasks: str,
    limit: int,
    top: int,
    out: str | None,
    ablation: Any,
) -> None:
    """Which units of CANDIDATE's compression its KL and flips come from.

    For each unit two ablations against the cached baseline store: only this unit compressed, and everything but
    this unit compressed (weights swapped in memory, no reload). Cost: 1 + 2 × units corpus passes of --chunks
    windows, then 2 + --top passes per task. Ranked by the KL that restoring the unit removes.

    \b
    Example: flipscope attribute bundled:smollm2-135m bundled:smollm2-135m+rtn:w3g64 --by block --tasks mmlu
    """
    from flipscope.attribution.units import UnitKind
    from flipscope.display import RichDisplay
    from flipscope.report.attribute_table import print_attribution
    from flipscope.runs.attribute import AttributeSettings, attribute

    settings = AttributeSettings(
        by=UnitKind(by),
        span=span,
        tasks=tuple(t for t in tasks.split(",") if t),
        limit=limit,
        top=top,
        ablation=ablation,
    )
    run, folder = attribute(baseline, candidate, settings, out=out, display=RichDisplay())
    print_attribution(run)
    click.echo(f"run directory: {folder}")


@click.command("advise")
@click.argument("baseline")
@click.option("--bits", default="3,4,5,6,8", show_default=True, help="Bit counts to choose from (RTN, symmetric).")
@click.option(
    "--group",
    default="64",
    show_default=True,
    help="Group size, or several (64,192: every bit width at each); 0: one scale per output channel.",
)
@_unit_options("linear")
@click.option("--target-bits", type=float, help="Average bits per weight, group scales included (e.g. 4.25).")
@click.option("--budget-kl", type=float, help="Or: the fewest bits whose predicted corpus KL is within this.")
@click.option(
    "--refine",
    default=0,
    show_default=True,
    help="Rounds re-measuring each unit one width up and down with the plan applied to the rest (0: none).",
)
@click.option("--start", type=click.Path(exists=True, dir_okay=False), help="Refine this plan (e.g. a recipe's).")
@click.option("--recipe", type=click.Choice(["q4_k_m"]), help="Write a hand-made recipe as a plan instead.")
@click.option("--calibration-windows", help="Windows A:B of --corpus that sensitivities are measured on (instead of "
              "--chunks N, which is 0:N).")  # fmt: skip
@click.option("--eval-corpus", default="olmo:coqa+drop", show_default=True, help="Text the plan, each refinement "
              "round and the uniform widths are judged on (prose the calibration corpus does not hold).")  # fmt: skip
@click.option("--eval-windows", default="0:8", show_default=True, help="Windows A:B of --eval-corpus; on the "
              "calibration corpus they must not overlap the calibration windows.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Plan file to write (JSON).")
@click.option("--types", default=None, help="gguf: baselines: llama.cpp types to choose from per tensor "
              "[default: Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0].")  # fmt: skip
@click.option("--target-bpw", type=float, help="gguf: baselines: bits per weight over every tensor of the file, "
              "block scales included, as llama.cpp stores them.")  # fmt: skip
@click.option("--size-of", help="gguf: baselines: or the tensor data of llama.cpp's own file of this type (Q4_K_M, "
              "…; block scales included), which is also judged beside the plan.")  # fmt: skip
@click.option("--imatrix", help="gguf: baselines: an importance matrix for every quantization: a llama.cpp "
              "imatrix file, or 'calibration' to compute one on the calibration windows (written as "
              "PLAN.imatrix.gguf).")  # fmt: skip
@_corpus_options
def advise_cmd(
    baseline: str,
    bits: str,
    group: str,
    by: str,
    span: int | None,
    target_bits: float | None,
    budget_kl: float | None,
    refine: int,
    start: str | None,
    recipe: str | None,
    calibration_windows: str | None,
    eval_corpus: str,
    eval_windows: str,
    out: str,
    types: str | None,
    target_bpw: float | None,
    size_of: str | None,
    imatrix: str | None,
    ablation: Any,
) -> None:
    """A mixed-precision plan for BASELINE: each unit's width chosen to minimise predicted corpus KL under the
    average-bits budget (or the fewest bits under a KL budget). Use it as a spec: BASELINE+plan:PLAN.json.

    A width is a bit count at a group size: --bits 4,5,6 --group 64,192 offers six, so coarser groups can pay for
    wider layers (the group float16 scales are counted in the bits).

    Fitted on one text, judged on another: sensitivities are measured on the calibration windows (--corpus, default
    a mix of CPython's documentation, standard-library source and MMLU validation questions; --chunks N or
    --calibration-windows A:B), the plan and the uniform widths on the evaluation windows (--eval-corpus, default
    CoQA stories and DROP passages; --eval-windows), with the plan minus each uniform width paired by window (its
    error bar counts windows). Windows of one corpus that overlap are refused. A width whose KL is NaN or infinite on
    any calibration window is refused for that unit (logged, and listed in the plan file under "refused").

    --refine N then re-measures each unit one width down and up with the plan applied to every other unit, solves
    the knapsack again over those in-context changes, and keeps the new plan only if its KL on the evaluation
    windows is lower (those windows then helped choose the plan: judge it on others). --start PLAN skips the
    single-unit pass and refines PLAN (e.g. a --recipe plan) under the budget.

    Cost: units × widths corpus passes of the calibration windows (bundled model, 210 Linears × 6 widths, 1 window:
    about 19 minutes on 2 CPU cores), 1 + widths passes of the evaluation windows, then about 2 × units per
    refinement round.

    A gguf: BASELINE gets llama.cpp types per tensor (--types), each measured from llama.cpp's own quantization of
    the whole file to that type (with --imatrix if given), under --target-bpw or --size-of Q4_K_M; write the file
    with flipscope compress BASELINE+ggml:plan=PLAN.json --out advised.gguf.

    \b
    Example: flipscope advise bundled:smollm2-135m --bits 4,5,6 --group 64,192 --target-bits 4.25 --chunks 1
             --out plan.json
             flipscope advise gguf:smollm2-135m --size-of Q4_K_M --by block --chunks 2 --out plan.json
    """
    gguf_only = {"--types": types, "--target-bpw": target_bpw, "--size-of": size_of, "--imatrix": imatrix}
    if baseline.startswith("gguf:"):
        rtn_only = {"--target-bits": target_bits, "--budget-kl": budget_kl, "--refine": refine, "--start": start,
                    "--recipe": recipe}  # fmt: skip
        given = [k for k, v in rtn_only.items() if v]
        ctx = click.get_current_context()
        given += [
            f"--{k}" for k in ("bits", "group") if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise click.BadParameter(
                f"{given[0]} is for RTN plans; a gguf: baseline takes --types and --target-bpw or --size-of"
            )
        _advise_gguf(baseline, by, span, calibration_windows, eval_corpus, eval_windows, out, ablation, **gguf_only)
        return
    given = [k for k, v in gguf_only.items() if v]
    if given:
        raise click.BadParameter(f"{given[0]} is for gguf: baselines (llama.cpp types per tensor)")
    groups = _integers("--group", group)
    if recipe:
        from flipscope.attribution.recipes import write_recipe

        if len(groups) != 1:
            raise click.BadParameter("--recipe takes one --group size")
        path, avg = write_recipe(baseline, recipe, out=out, group_size=groups[0] or None)
        click.echo(f"wrote {path}: {recipe} style, {avg:.3f} bits per weight; use it as {baseline}+plan:{path}")
        return
    from flipscope.attribution.units import UnitKind
    from flipscope.display import RichDisplay
    from flipscope.runs.advise import AdviseSettings, advise

    ablation = _calibration(ablation, calibration_windows)
    settings = AdviseSettings(bits=_integers("--bits", bits), group_sizes=tuple(g or None for g in groups),
                              by=UnitKind(by), span=span,
                              target_bits=target_bits, budget_kl=budget_kl, refine=refine, start=start,
                              ablation=ablation, eval_corpus=eval_corpus,
                              eval_windows=_window_range("--eval-windows", eval_windows) or (0, 8))  # fmt: skip
    a = advise(baseline, settings, out=out, display=RichDisplay())
    _print_advice(a, baseline)


def _calibration(ablation: Any, calibration_windows: str | None) -> Any:
    """The ablation settings with --calibration-windows A:B applied (refused beside an explicit --chunks)."""
    calibration = _window_range("--calibration-windows", calibration_windows)
    if calibration is None:
        return ablation
    source = click.get_current_context().get_parameter_source("chunks")
    if source is not click.core.ParameterSource.DEFAULT:
        raise click.BadParameter("give --chunks N or --calibration-windows A:B, not both")
    return replace(ablation, first=calibration[0], chunks=calibration[1] - calibration[0])


def _advise_gguf(baseline: str, by: str, span: int | None, calibration_windows: str | None, eval_corpus: str,
                 eval_windows: str, out: str, ablation: Any, **gguf: Any) -> None:  # fmt: skip
    from flipscope.attribution.units import UnitKind
    from flipscope.display import RichDisplay
    from flipscope.runs.advise_gguf import DEFAULT_TYPES, GGUFAdviseSettings, advise_gguf

    chosen = gguf["--imatrix"]
    settings = GGUFAdviseSettings(
        types=tuple(t for t in (gguf["--types"] or ",".join(DEFAULT_TYPES)).split(",") if t.strip()),
        target_bpw=gguf["--target-bpw"], size_of=gguf["--size-of"],
        imatrix=None if chosen in (None, "calibration") else chosen, compute_imatrix=chosen == "calibration",
        by=UnitKind(by), span=span, ablation=_calibration(ablation, calibration_windows), eval_corpus=eval_corpus,
        eval_windows=_window_range("--eval-windows", eval_windows) or (0, 8),
    )  # fmt: skip
    a = advise_gguf(baseline, settings, out=out, display=RichDisplay())
    types = ", ".join(f"{n} {t}" for t, n in sorted(a.types.items(), key=lambda kv: -kv[1]))
    click.echo(f"plan {a.plan}: {a.units} units, {a.bits_per_weight:.4f} bits per weight (budget {a.budget_bpw:.4f}); "
               f"tensors: {types}")  # fmt: skip
    click.echo(f"corpus KL: calibration predicted {a.predicted_kl:.4f} (single-unit KLs added), measured "
               f"{a.calibration_kl:.4f}; evaluation {a.eval_kl:.4f} ({a.seconds:.0f} s)")  # fmt: skip
    if a.recipe is not None:
        versus = "" if a.difference is None else f"; plan − it {a.difference.describe()}"
        kl = "not finite in every window" if a.recipe_eval_kl is None else f"{a.recipe_eval_kl:.4f}"
        click.echo(f"  llama.cpp {a.recipe}: {a.recipe_bpw:.4f} bits per weight, evaluation KL {kl}{versus}")
    if a.imatrix is not None:
        click.echo(f"importance matrix: {a.imatrix}")
    click.echo(f"write the file: flipscope compress {baseline}+ggml:plan={a.plan} --out advised.gguf")


def _print_advice(a: Any, baseline: str) -> None:
    def where(w: dict[str, Any]) -> str:
        indices = w["windows"]
        return f"{w['corpus']} (sha256 {w['sha256'][:12]}…) windows {indices[0]}–{indices[-1]}"

    click.echo(f"calibration: {where(a.calibration)}; evaluation: {where(a.evaluation)}")
    for unit, widths in a.refused.items():
        for width, windows in widths.items():
            click.echo(f"refused: {unit} at {width} (NaN or infinite KL in calibration windows {windows})")
    if a.predicted_kl is not None:
        click.echo(f"single-unit knapsack: calibration KL predicted {a.predicted_kl:.4f} (single-unit KLs added), "
                   f"measured {a.first_calibration_kl:.4f}; evaluation KL {a.first_eval_kl:.4f}")  # fmt: skip
    for i, r in enumerate(a.rounds, 1):
        verdict = "kept" if r.kept else "discarded"
        click.echo(f"refinement round {i} ({r.passes} passes): {r.avg_bits:.3f} bits per weight, calibration KL "
                   f"predicted {r.predicted_kl:.4f}, measured {r.calibration_kl:.4f}; evaluation KL "
                   f"{r.eval_kl:.4f}: {verdict}")  # fmt: skip
    click.echo(f"plan {a.plan}: {a.units} units, {a.avg_bits:.3f} bits per weight, evaluation KL {a.eval_kl:.4f} "
               f"(calibration {a.calibration_kl:.4f}; {a.seconds:.0f} s)")  # fmt: skip
    for name, r in a.uniform.items():
        versus = "" if r.difference is None else f"; plan − it {r.difference.describe()}"
        click.echo(f"  uniform {name}: {r.avg_bits:.3f} bits per weight, evaluation KL {r.eval_kl:.4f}{versus}")
    click.echo(f"use it as: {baseline}+plan:{a.plan}")
