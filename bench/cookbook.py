#!/usr/bin/env python3
"""The cookbook's benchmarks (examples/cookbook), as `make bench` runs them:

- the inference service: requests/s and p50/p99 latency with 1, 4 and 16
  workers against the same model called inline, one request at a time;
- the processing pipeline: items/s against the same pipeline written with
  the standard library's multiprocessing (fork), in the same run;

each on one node (embedded runtime) and on a virtual cluster of 2 nodes.
The tables are the examples' own, printed as they run.

    /usr/bin/python3 bench/cookbook.py [--quick]
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("DRAGON_BUILD_DIR", os.path.join(ROOT, "build"))
ORCH = os.path.join(BUILD, "bin", "dragon-orchestrate")


def run(rel: str, args: list[str], nodes: int) -> int:
    cmd = [sys.executable, os.path.join(ROOT, "examples", "cookbook", rel), *args]
    if nodes > 1:
        cmd = [ORCH, "run", "--launcher", "virtual", "--nodes", str(nodes), "--", *cmd]
    env = dict(os.environ, PYTHONPATH=os.path.join(BUILD, "python"))
    for k in ("DRAGON_AGENT_SOCKET", "DRAGON_PUID", "DRAGON_EMBEDDED_ARGS"):
        env.pop(k, None)
    print(f"\n## {rel}, {nodes} node(s)\n", flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    print("\n".join(l for l in p.stdout.splitlines() if not l.startswith("RESULT ")), flush=True)
    if p.returncode != 0:
        print(f"cookbook bench: {rel} on {nodes} node(s) exited {p.returncode}", file=sys.stderr)
    return p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description="examples/cookbook benchmarks")
    ap.add_argument("--quick", action="store_true", help="fewer requests and items")
    a = ap.parse_args()
    requests = "1000" if a.quick else "4000"
    items = "1000" if a.quick else "5000"
    bad = 0
    for nodes in (1, 2):
        bad |= run("inference/inference.py", ["--workers", "1,4,16", "--requests", requests], nodes)
        bad |= run("pipeline/pipeline.py", ["--items", items], nodes)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
