"""What runs inside the sandbox, as source handed to the interpreter with ``-c``: the trusted launcher (limits,
privileges, then exec of the runner) and the trusted runner that executes the program and reports how it ended.

The runner reads a per-run token from its stdin (then reopens stdin on /dev/null), executes the program as
lm-evaluation-harness's ``code_eval`` does — ``exec`` of the source with empty globals, so ``__name__`` is
``"builtins"`` and an ``if __name__ == "__main__":`` block does not run — and only when the program's code ran to
its end writes the token to a report pipe of its own (not the program's stdout, which the program may replace or
close) and exits 0; otherwise it exits 1. ``sys.exit()``, ``exit()`` or ``SystemExit`` of any status in the
program is a failure (as in lm-eval: it never reached the tests after it); a program that ends its own process
(``os._exit(0)``) exits without the token and is a failure too. The token guards against programs that
stop early by accident, not against one that searches the runner's memory for it."""

from __future__ import annotations

#: Run as ``python -I -S -c LAUNCHER cpu mem fsize nproc nofile uid parent RUNNER program report-fd``.
LAUNCHER = """
import os, resource, sys
cpu, mem, fsize, nproc, nofile, uid, parent = map(int, sys.argv[1:8])
for name, soft, hard in (("CPU", cpu, cpu + 1), ("AS", mem, mem), ("FSIZE", fsize, fsize),
                         ("NPROC", nproc, nproc), ("NOFILE", nofile, nofile), ("CORE", 0, 0)):
    kind = getattr(resource, "RLIMIT_" + name)
    cap = resource.getrlimit(kind)[1]
    if cap != resource.RLIM_INFINITY:
        soft, hard = min(soft, cap), min(hard, cap)
    resource.setrlimit(kind, (soft, hard))
if uid >= 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
if parent and sys.platform == "linux":
    import ctypes
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL: the program dies with flipscope
    if os.getppid() != parent:
        sys.exit(70)
os.execv(sys.executable, [sys.executable, "-I", "-c", *sys.argv[8:11]])
"""

#: Run as ``python -I -c RUNNER program report-fd`` with the token on stdin.
RUNNER = """
import os, sys, traceback
token = sys.stdin.readline().strip()
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
path, report = sys.argv[1], int(sys.argv[2])
os.set_inheritable(report, False)
sys.argv = [path]
with open(path, encoding="utf-8") as handle:
    source = handle.read()
ended = False
try:
    exec(compile(source, path, "exec"), {})
    ended = True
except SystemExit as stop:
    sys.stderr.write(f"SystemExit: {stop.code!r} before the end of the program\\n")
except BaseException:
    traceback.print_exc()
try:
    if ended:
        os.write(report, token.encode())
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
finally:
    os._exit(0 if ended else 1)
"""
