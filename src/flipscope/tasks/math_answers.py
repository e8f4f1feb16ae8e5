"""Final answers of competition maths (MATH), found, normalised and compared as lm-evaluation-harness 0.4.13's
``minerva_math`` tasks grade them (``exact_match``): the answer after "Final Answer: The final answer is", the
normalisation of Lewkowycz et al. (2022, appendix D) as lm-eval 0.4.13 applies it, and equivalence by identical
strings or, failing that, SymPy's LaTeX parser (``antlr4-python3-runtime`` 4.11, as lm-eval pins it) with the
difference simplified to zero within 5 seconds. tests/test_minerva_math.py checks each piece against lm-eval's own
functions on every MATH-500 solution and on answers written to be hard."""

from __future__ import annotations

import functools
import logging
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flipscope.errors import FlipscopeError

log = logging.getLogger(__name__)

#: What lm-eval writes where no final answer is found.
NO_FINAL = "[invalidanswer]"
_FINAL = re.compile(r"Final Answer: The final answer is(.*?). I hope it is correct.")
_CLOSING = "I hope it is correct."

#: Replaced in order after the answer's last "=" (lm-eval 0.4.13's list).
_REPLACED = (("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
             (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"))  # fmt: skip
#: Units and decorations dropped: words while spaces still separate them and again once they are gone (never
#: inside a LaTeX command: "\left" keeps its "ft"); the other strings wherever they are.
_DROPPED = ("square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
            "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
            "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
            "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;",
            r",\!", "{,}", '"', "\\dots")  # fmt: skip
_UNWRAPPED = [re.compile(rf"(\\{cmd}\{{)(.*?)(\}})") for cmd in ("text", "textbf", "overline")]


def last_boxed(text: str) -> str | None:
    """The last ``\\boxed{…}`` (braces balanced) or ``\\fbox{…}`` of a text, with its command; a ``\\boxed x``
    written without braces runs to the next "$". None where there is none, or its braces never close."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if text[i] == "}" and depth == 0:
            return text[start : i + 1]
    return None


def unboxed(boxed: str) -> str:
    """What ``\\boxed{…}`` (or ``\\boxed …``) holds; a text in no such box is an error (lm-eval asserts)."""
    for left, right in (("\\boxed ", ""), ("\\boxed{", "}")):
        if boxed.startswith(left) and boxed.endswith(right):
            return boxed[len(left) : len(boxed) - len(right)]
    raise ValueError(f"not a \\boxed{{…}} answer: {boxed[:60]!r}")


def gold_answer(solution: str) -> str:
    """A reference solution's answer as lm-eval's minerva_math compares it: its last box's content, normalised."""
    boxed = last_boxed(solution)
    if boxed is None:
        raise FlipscopeError(f"a MATH solution has no \\boxed answer: {solution[-80:]!r}",
                             fix="delete the cached task files (flipscope cache) to fetch them again")  # fmt: skip
    return normalise_answer(unboxed(boxed))


def stated_answer(text: str) -> str:
    """The answer a generated solution commits to: what follows its first "Final Answer: The final answer is"
    (up to ". I hope it is correct.", which may be missing at the very end), or ``[invalidanswer]``."""
    found = _FINAL.search(text + _CLOSING)
    return found.group(1).strip() if found else NO_FINAL


def normalise_answer(answer: str) -> str:
    """An answer as lm-eval 0.4.13 normalises it before comparing (Lewkowycz et al. 2022, appendix D)."""
    out = answer.split("=")[-1]
    words = [w for w in _DROPPED if w.isalpha()]
    for word in words:
        out = re.sub(rf"(?<!\\)\b{word}\b", "", out)
    for before, after in _REPLACED:
        out = out.replace(before, after)
    for dropped in _DROPPED:
        if dropped.isalpha():  # glued to its neighbours now: removed outside LaTeX command names only
            pieces = re.split(r"(\\[a-zA-Z]+)", out)
            out = "".join(p if i % 2 else p.replace(dropped, "") for i, p in enumerate(pieces))
        else:
            out = out.replace(dropped, "")
    out = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", out)  # the first $…$ span
    for pattern in _UNWRAPPED:
        out = pattern.sub("\\2", out)
    out = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", out)
    out = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", out)  # \fracab → \frac{a}{b}
    out = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", out)  # \sqrt[3]a → \sqrt[3]{a}
    out = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", out)  # \sqrta → \sqrt{a}
    out = out.replace("$", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", out):  # 100,000 → 100000; a tuple "0,1" stays
        out = out.replace(",", "")
    return out


def equivalent(a: str, b: str, *, seconds: int = 5) -> bool:
    """Are two normalised answers the same (lm-eval's ``is_equiv``): identical non-empty strings, or both parsed
    by SymPy's LaTeX parser with a difference that simplifies to 0 within ``seconds`` (in the main thread; a
    parse, subtraction or simplification that fails, or time running out, is "not the same")."""
    if a and a == b:
        return True
    sympy, parse_latex = _sympy()
    try:
        with _time_limit(seconds):
            try:
                difference = parse_latex(a) - parse_latex(b)
            except (sympy.SympifyError, TypeError, sympy.parsing.latex.errors.LaTeXParsingError):
                return False
            return bool(sympy.simplify(difference) == 0)
    except TimeoutError:
        log.debug("comparing %r and %r took over %d s: not the same", a, b, seconds)
        return False
    except Exception as exc:  # SymPy raises many kinds on odd LaTeX: each means "not shown equal"
        log.debug("comparing %r and %r failed (%s): not the same", a, b, exc)
        return False


def boxed_answers(text: str) -> Iterator[str]:
    """Every final answer a generated text states anywhere, normalised: each "The final answer is …" and each
    ``\\boxed{…}`` (for *found but not committed*: the right answer written somewhere, another one committed)."""
    for found in _FINAL.finditer(text + _CLOSING):
        yield normalise_answer(found.group(1).strip())
    rest = text
    while (box := last_boxed(rest)) is not None:
        if box.startswith("\\boxed"):
            try:
                inner = unboxed(box)
            except ValueError:  # "\\boxed\\frac12", "\\boxed\\n{5}": no braces right after; taken as written
                inner = box.removeprefix("\\boxed")
        else:
            inner = box.removeprefix("\\fbox{").removesuffix("}")
        yield normalise_answer(inner)
        rest = rest[: rest.rfind(box)]


@functools.cache
def _sympy() -> tuple[Any, Any]:
    from importlib.metadata import PackageNotFoundError, version

    fix = "pip install 'antlr4-python3-runtime==4.11.0' sympy"
    try:
        import antlr4  # noqa: F401  (SymPy's LaTeX parser needs it; its absence shows only when parsing)
        import sympy
        from sympy.parsing.latex import parse_latex

        antlr = version("antlr4-python3-runtime")
    except (ModuleNotFoundError, PackageNotFoundError) as exc:
        raise FlipscopeError(f"grading MATH answers needs SymPy's LaTeX parser ({exc})", fix=fix) from exc
    if not antlr.startswith("4.11"):  # SymPy's generated parser is ANTLR 4.11's; others fail or parse otherwise
        raise FlipscopeError(f"grading MATH answers needs ANTLR 4.11 (lm-eval's pin), not {antlr}", fix=fix)
    return sympy, parse_latex


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """SIGALRM after ``seconds`` raises TimeoutError (only the main thread can take signals: elsewhere, no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ring(signum: int, frame: object) -> None:
        raise TimeoutError

    before = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
