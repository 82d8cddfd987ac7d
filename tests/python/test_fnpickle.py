"""The lean pickling of Python-callable targets: by value for __main__,
closures, recursion, lambdas; by reference for importable functions; the
cloudpickle fallback for what it cannot carry. Each payload is loaded in a
fresh `python3 -S` (as a member is), with no cloudpickle import allowed on
the lean path."""
import json

SCRIPT = """
import json, os, subprocess, sys
from dragon import _fnpickle
import os.path as osp

SCALE = 3

def helper(x):
    return x * SCALE

def recursive(n):
    return 1 if n <= 1 else n * recursive(n - 1)

def uses_module(p):
    return osp.basename(p) + os.sep

def make_counter(start):
    count = start
    def bump(by=1, *, twice=False):
        nonlocal count
        count += by * (2 if twice else 1)
        return count, helper(count)
    return bump

class Local:
    def __init__(self, v):
        self.v = v

cases = {
    "plain": (helper, (5,), {}),
    "recursive": (recursive, (6,), {}),
    "module": (uses_module, ("/a/b/c.txt",), {}),
    "closure": (make_counter(10), (2,), {"twice": True}),
    "lambda": ((lambda a, b=4: a + b + SCALE), (1,), {}),
    "by_reference": (osp.join, ("x", "y"), {}),
    "main_class": ((lambda o: o.v * 2), (Local(21),), {}),
}
out = {}
for name, (fn, args, kwargs) in cases.items():
    data, how = _fnpickle.dumps((fn, args, kwargs))
    child = ("import sys,_pickle;sys.path[:]=sys.argv[1].split('\\x1e');"
             "fn,a,k=_pickle.loads(sys.stdin.buffer.read());r=fn(*a,**k);"
             "print(repr(r));print('cloudpickle' in sys.modules)")
    p = subprocess.run([sys.executable, "-S", "-c", child, "\\x1e".join(os.path.abspath(x) if x else os.getcwd() for x in sys.path)],
                       input=data, capture_output=True)
    lines = p.stdout.decode().split("\\n")
    out[name] = {"how": how, "result": lines[0] if p.returncode == 0 else p.stderr.decode()[-300:],
                 "cloudpickle_loaded": lines[1] if p.returncode == 0 else None}
print(json.dumps(out))
"""


def test_payloads_rebuild_in_a_bare_interpreter(script):
    out = json.loads(script(SCRIPT).run().stdout.strip().splitlines()[-1])
    assert out["plain"] == {"how": "lean", "result": "15", "cloudpickle_loaded": "False"}
    assert out["recursive"] == {"how": "lean", "result": "720", "cloudpickle_loaded": "False"}
    assert out["module"] == {"how": "lean", "result": "'c.txt/'", "cloudpickle_loaded": "False"}
    assert out["closure"] == {"how": "lean", "result": "(14, 42)", "cloudpickle_loaded": "False"}
    assert out["lambda"] == {"how": "lean", "result": "8", "cloudpickle_loaded": "False"}
    assert out["by_reference"] == {"how": "lean", "result": "'x/y'", "cloudpickle_loaded": "False"}
    # An instance of a __main__ class: the fallback carries it, at cloudpickle's cost.
    assert out["main_class"] == {"how": "cloudpickle", "result": "42", "cloudpickle_loaded": "True"}
