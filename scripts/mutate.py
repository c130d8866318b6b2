"""Mutation testing for mlp: break the code on purpose, one precise edit at a time, and check
that some test fails.

Each mutation (scripts/mutations.py) is a file under src/mlp, a snippet that must occur in it
exactly once, and its replacement: a flipped comparison, a dropped line, a swapped argument, an
off-by-one, a changed constant.  The tree under src/ is copied once to a temporary folder; each
mutation is written into the copy, the tests that cover its module run against it
(``PYTHONPATH`` points there, bytecode off so no stale ``.pyc`` is ever read), and the file is
put back.  The worktree itself is never touched.

- killed: some selected test failed or errored (or the tests ran past ``--timeout``);
- survived: every selected test passed with the code broken;
- stale: the snippet is no longer in the file (or is there more than once) - the code moved, so
  the mutation must be rewritten; stale ones are listed and left out of the score;
- broken selection: pytest collected nothing or was given a wrong argument (exit 4 or 5).

Before the mutations, each module's tests are run once on the unbroken copy; a module whose tests
fail there is reported and its mutations skipped (a kill would mean nothing).

    python scripts/mutate.py                  # everything (about half an hour on two busy cores)
    python scripts/mutate.py --only findings  # the mutations of files whose path contains "findings"
    python scripts/mutate.py --list           # the mutations and the tests each one runs
    python scripts/mutate.py --only trainer --ids 3,4  # just those two (ids as --list shows them)

Run it with ``nice -n 10`` and ``OMP_NUM_THREADS=1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutations import MUTATIONS, TESTS, Mutation  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def tests_for(mutation: Mutation) -> list[str]:
    return list(mutation.tests) or TESTS[mutation.file]


def run_tests(src: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """``(outcome, seconds, last line)``: outcome is passed, failed, timeout or broken."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the tests' own child processes too
        proc.communicate()
        return "timeout", time.perf_counter() - started, f"ran past {timeout:.0f} s"
    seconds = time.perf_counter() - started
    last = next((line for line in reversed(output.splitlines()) if line.strip()), "")
    outcome = {0: "passed", 1: "failed", 2: "failed"}.get(proc.returncode, "broken")  # 2: a collection error
    return outcome, seconds, last


def apply(original: str, mutation: Mutation) -> str | None:
    """The mutated text, or None when the snippet is not in ``original`` exactly once (stale)."""
    if original.count(mutation.old) != 1:
        return None
    return original.replace(mutation.old, mutation.new)


def select(args) -> list[tuple[int, Mutation]]:
    chosen = [(i, m) for i, m in enumerate(MUTATIONS, 1) if not args.only or args.only in m.file]
    if args.ids:
        wanted = {int(i) for i in args.ids.split(",")}
        chosen = [(i, m) for i, m in chosen if i in wanted]
    return chosen


def list_mutations(chosen: list[tuple[int, Mutation]]) -> None:
    for i, m in chosen:
        text = (ROOT / "src" / m.file).read_text()
        state = "" if text.count(m.old) == 1 else "  [STALE]"
        print(f"{i:3d}  {m.file}: {m.what}{state}\n     tests: {' '.join(tests_for(m))}")


def baseline(src: Path, chosen, timeout: float) -> set[tuple[str, ...]]:
    """The test selections that fail on the unbroken code (their mutations cannot be judged)."""
    bad = set()
    for tests in dict.fromkeys(tuple(tests_for(m)) for _, m in chosen):
        outcome, seconds, last = run_tests(src, list(tests), timeout)
        print(f"baseline  {outcome:7s} {seconds:6.1f} s  {' '.join(tests)}", flush=True)
        if outcome != "passed":
            print(f"          {last}", flush=True)
            bad.add(tests)
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="only the mutations of files whose path (under src/mlp) contains this")
    parser.add_argument("--ids", help="only these mutation numbers, comma-separated (as --list shows them)")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests, run nothing")
    parser.add_argument("--timeout", type=float, default=240, help="seconds the tests of one mutation may take")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unbroken code")
    args = parser.parse_args()
    chosen = select(args)
    if args.list:
        list_mutations(chosen)
        return 0
    with tempfile.TemporaryDirectory(prefix="mlp-mutate-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        bad = set() if args.no_baseline else baseline(src, chosen, args.timeout)
        results = [judge(src, i, m, bad, args.timeout) for i, m in chosen]
    return report(results)


def judge(src: Path, number: int, mutation: Mutation, bad: set, timeout: float) -> tuple[int, Mutation, str]:
    tests = tests_for(mutation)
    path = src / mutation.file
    original = path.read_text()
    mutated = apply(original, mutation)
    if mutated is None:
        outcome, seconds, last = "stale", 0.0, f"the snippet occurs {original.count(mutation.old)} times"
    elif tuple(tests) in bad:
        outcome, seconds, last = "skipped", 0.0, "its tests fail on the unbroken code"
    else:
        path.write_text(mutated)
        try:
            outcome, seconds, last = run_tests(src, tests, timeout)
        finally:
            path.write_text(original)
        outcome = {"failed": "killed", "timeout": "killed", "passed": "SURVIVED"}.get(outcome, outcome)
    print(f"{number:3d} {outcome:9s} {seconds:6.1f} s  {mutation.file}: {mutation.what}"
          + (f"\n               {last}" if outcome in ("stale", "broken", "skipped") else ""), flush=True)
    return number, mutation, outcome


def report(results: list[tuple[int, Mutation, str]]) -> int:
    counts = {k: sum(1 for *_, o in results if o == k) for k in ("killed", "SURVIVED", "stale", "broken", "skipped")}
    judged = counts["killed"] + counts["SURVIVED"]
    score = counts["killed"] / judged if judged else 0.0
    print(f"\n{counts['killed']} of {judged} mutations killed ({score:.0%}); "
          f"{counts['stale']} stale, {counts['broken']} with a broken test selection, {counts['skipped']} skipped")
    for title, kind in (("survivors", "SURVIVED"), ("stale (rewrite them)", "stale"), ("broken", "broken")):
        listed = [(i, m) for i, m, o in results if o == kind]
        if listed:
            print(f"\n{title}:")
            for i, m in listed:
                print(f"  {i:3d}  {m.file}: {m.what}")
    return 0 if counts["SURVIVED"] == counts["stale"] == counts["broken"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
