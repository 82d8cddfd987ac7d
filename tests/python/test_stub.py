"""dragon/_core.pyi names exactly what dragon._core has (the type stub must
not drift from the module)."""
import ast
import os
import subprocess

from conftest import PY, PYPATH


def stub_names():
    tree = ast.parse(open(os.path.join(PYPATH, "dragon", "_core.pyi")).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = sorted(n.name for n in node.body if isinstance(n, ast.FunctionDef)
                                    and not n.name.startswith("_"))
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = None
        elif isinstance(node, ast.AnnAssign):
            out[node.target.id] = None
    return out


def test_stub_matches_the_module():
    code = ("import json, dragon._core as c\n"
            "out = {}\n"
            "for n in dir(c):\n"
            "    if n.startswith('_'): continue\n"
            "    v = getattr(c, n)\n"
            "    out[n] = sorted(m for m in dir(v) if not m.startswith('_') and m not in dir(Exception)) "
            "if isinstance(v, type) and not issubclass(v, BaseException) else None\n"
            "print(json.dumps(out))")
    import json
    real = json.loads(subprocess.run([PY, "-c", code], env=dict(os.environ, PYTHONPATH=PYPATH),
                                     capture_output=True, text=True, check=True).stdout)
    stub = stub_names()
    for name, members in stub.items():
        if members is not None and name in real and real[name] is not None:
            stub[name] = sorted(set(members))
    # Exceptions: the stub declares attributes, not methods; compare names only.
    for name in list(real):
        if real[name] is None or stub.get(name) is None:
            real[name] = None
            stub.setdefault(name, None)
            stub[name] = None
    assert real == stub
