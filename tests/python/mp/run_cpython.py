#!/usr/bin/python3
"""Runs CPython's multiprocessing tests (cpython_mp.py) for several start
methods in one session and prints pass/fail/skip counts side by side.

    run_cpython.py                       # spawn, dragon (1 node), dragon (2 virtual nodes), and
                                         # the lock/event/barrier/value classes with node 1
                                         # reaching node 0's objects as another host would
    run_cpython.py --configs dragon -k TestWait -v
    run_cpython.py --check               # exit 1 if dragon fails or errs anywhere, or if a
                                         # test that passes under spawn neither passes under
                                         # dragon nor is listed in skips.txt

Each configuration runs in its own interpreter (Debian's /usr/bin/python3,
the package from $PYTHONPATH); dragon's runs start an embedded runtime,
the 2-node one a virtual cluster (``--launcher virtual --nodes 2``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# The classes of the sync objects (issue 20), run once more with
# DRAGON_SYNC_THROUGH_HOME=1: every process of node 1 reaches node 0's
# objects through node 0's agent, as a process of another host must.
SYNC_CLASSES = [f"WithProcessesTest{c}." for c in
                ("Lock", "Semaphore", "Condition", "Event", "Barrier", "Value", "Array", "SharedCTypes")]
# name: (start method, embedded runtime's arguments, environment, only these tests)
CONFIGS = {
    "spawn": ("spawn", "", {}, []),
    "dragon": ("dragon", "", {}, []),
    "dragon-2nodes": ("dragon", "--launcher virtual --nodes 2", {}, []),
    "dragon-2hosts": ("dragon", "--launcher virtual --nodes 2", {"DRAGON_SYNC_THROUGH_HOME": "1"}, SYNC_CLASSES),
}

CHILD = r"""
import json, sys, time, unittest
sys.path.insert(0, {here!r})
import cpython_mp
loader = unittest.TestLoader()
if {patterns!r}:
    # as unittest's -k: a pattern without a wildcard matches as a substring
    loader.testNamePatterns = [pat if "*" in pat else "*" + pat + "*" for pat in {patterns!r}]
suite = cpython_mp.load_tests(loader, None, None)
class Result(unittest.TextTestResult):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.passed = []
    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test.id().split(".", 1)[1])
t0 = time.monotonic()
res = unittest.TextTestRunner(verbosity={verbosity}, stream=sys.stderr, resultclass=Result).run(suite)
out = {{"run": res.testsRun, "passed_ids": res.passed,
       "skipped_ids": {{t.id().split(".", 1)[1]: r for t, r in res.skipped}},
       "failures": [t.id() for t, _ in res.failures],
       "errors": [t.id() for t, _ in res.errors], "skipped": len(res.skipped),
       "xfail": len(res.expectedFailures), "unexpected_success": len(res.unexpectedSuccesses),
       "seconds": round(time.monotonic() - t0, 1)}}
print("RESULT " + json.dumps(out), flush=True)
"""


def patterns_of(name: str, pattern: str) -> list[str]:
    """The -k patterns a configuration runs with: its own classes (if any),
    narrowed by the command line's pattern."""
    own = CONFIGS[name][3]
    if not pattern:
        return list(own)
    if not own:
        return [pattern]
    return [f"*{c}*{pattern}*" for c in own]


def matches(test_id: str, patterns: list[str]) -> bool:
    full = "cpython_mp." + test_id
    return not patterns or any(fnmatch.fnmatchcase(full, p if "*" in p else f"*{p}*") for p in patterns)


def run_config(name: str, pattern: str, verbosity: int, timeout: float) -> dict:
    method, embedded, extra_env, _ = CONFIGS[name]
    env = dict(os.environ)
    for k in ("DRAGON_AGENT_SOCKET", "DRAGON_PUID"):
        env.pop(k, None)
    env.update(extra_env)
    env["DRAGON_MP_TEST_METHOD"] = method
    env["DRAGON_MP_TEST_CONFIG"] = name
    env["DRAGON_EMBEDDED_ARGS"] = embedded
    code = CHILD.format(here=str(HERE), patterns=patterns_of(name, pattern), verbosity=verbosity)
    t0 = time.monotonic()
    try:
        p = subprocess.run(["/usr/bin/python3", "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                           timeout=timeout, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"config": name, "hung": True, "seconds": round(time.monotonic() - t0, 1)}
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if not lines:
        return {"config": name, "crashed": p.returncode, "seconds": round(time.monotonic() - t0, 1)}
    r = json.loads(lines[-1][7:])
    r["config"] = name
    r["passed"] = len(r["passed_ids"])
    return r


def table(results: list[dict]) -> str:
    head = f"{'config':<15} {'run':>5} {'passed':>7} {'failed':>7} {'errors':>7} {'skipped':>8} {'seconds':>8}"
    rows = [head, "-" * len(head)]
    for r in results:
        if "run" not in r:
            rows.append(f"{r['config']:<15} {'hung' if r.get('hung') else 'crashed':>5}"
                        f"{'':>40} {r['seconds']:>8}")
            continue
        rows.append(f"{r['config']:<15} {r['run']:>5} {r['passed']:>7} {len(r['failures']):>7} "
                    f"{len(r['errors']):>7} {r['skipped']:>8} {r['seconds']:>8}")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="spawn,dragon,dragon-2nodes,dragon-2hosts")
    ap.add_argument("-k", dest="pattern", default="", help="only tests matching this (unittest -k)")
    ap.add_argument("-v", dest="verbosity", action="count", default=1)
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per configuration")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    results = []
    for name in a.configs.split(","):
        if name not in CONFIGS:
            ap.error(f"--configs: unknown configuration {name!r} (known: {', '.join(CONFIGS)})")
        r = run_config(name, a.pattern, a.verbosity, a.timeout)
        results.append(r)
        for t in r.get("failures", []) + r.get("errors", []):
            print(f"{name}: FAILED {t}")
    print(table(results))
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))
    if not a.check:
        return 0
    bad = False
    by = {r["config"]: r for r in results}
    for name, r in by.items():
        if not name.startswith("dragon"):
            continue
        if "run" not in r or r["failures"] or r["errors"]:
            print(f"check: {name} did not pass cleanly", file=sys.stderr)
            bad = True
    spawn = by.get("spawn")
    if spawn is not None and "run" in spawn:
        for name, r in by.items():
            if not name.startswith("dragon") or "run" not in r:
                continue
            ran = patterns_of(name, a.pattern)  # spawn's tests this configuration runs too
            lost = sorted(t for t in set(spawn["passed_ids"]) - set(r["passed_ids"]) if matches(t, ran))
            listed = [t for t in lost if t in r["skipped_ids"]]
            unlisted = [t for t in lost if t not in r["skipped_ids"]]
            print(f"{name}: {len(lost)} of spawn's passing tests do not pass: {len(listed)} listed in skips.txt"
                  + (f", {len(unlisted)} NOT: {', '.join(unlisted)}" if unlisted else ""))
            bad = bad or bool(unlisted)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
