"""Pickling a Python-callable target for a member process.

Functions that can be imported by name travel by reference, as pickle does.
Functions of ``__main__``, lambdas and nested functions travel by value: their
code (marshal: the member is the same interpreter), the globals they name,
defaults and closure, rebuilt by dragon._rebuild, which needs no module
beyond the builtin ones. Anything this cannot carry (a class defined in
``__main__``, an instance of one, a module that is not importable) makes the
whole payload go through cloudpickle instead, which is complete but costs
each member the import of cloudpickle (tens of milliseconds).
"""

from __future__ import annotations

import io
import marshal
import pickle
import sys
import types

from dragon import _rebuild


class _Unsupported(Exception):
    pass


def _importable(obj) -> bool:
    """Whether pickle's by-reference form finds `obj` again in another process."""
    mod_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if mod_name in (None, "__main__", "__mp_main__") or not qualname or "<locals>" in qualname:
        return False
    found = sys.modules.get(mod_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj


def _global_names(code: types.CodeType, out: set[str]) -> set[str]:
    out.update(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _global_names(c, out)
    return out


class _Pickler(pickle.Pickler):
    def __init__(self, f):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self._bases: dict[int, tuple[dict, dict]] = {}

    def reducer_override(self, obj):
        t = type(obj)
        if t is types.FunctionType:
            return NotImplemented if _importable(obj) else self._function(obj)
        if t is types.ModuleType:
            if obj.__name__ in ("__main__", "__mp_main__") or getattr(obj, "__spec__", None) is None:
                raise _Unsupported(f"module {obj.__name__} cannot be imported by name")
            return (_rebuild.module, (obj.__name__,))
        if isinstance(obj, type) and not _importable(obj):
            raise _Unsupported(f"class {obj.__qualname__} of {obj.__module__}")
        return NotImplemented

    def _function(self, fn: types.FunctionType):
        # Functions of one module share one globals dict on the other side, too.
        key = id(fn.__globals__)
        if key not in self._bases:
            self._bases[key] = ({"__name__": fn.__globals__.get("__name__", fn.__module__)}, fn.__globals__)
        base = self._bases[key][0]
        code = fn.__code__
        g = fn.__globals__
        names = {n: g[n] for n in sorted(_global_names(code, set())) if n in g and n != "__builtins__"}
        closure = []
        for cell in fn.__closure__ or ():
            try:
                closure.append(cell.cell_contents)
            except ValueError:
                closure.append(_rebuild.Empty)
        state = (names, fn.__defaults__, fn.__kwdefaults__, tuple(closure), fn.__qualname__, fn.__module__,
                 fn.__doc__, dict(fn.__dict__))
        return (_rebuild.make_function, (marshal.dumps(code), base, fn.__name__, len(code.co_freevars)), state,
                None, None, _rebuild.set_function_state)


def dumps(obj) -> tuple[bytes, str]:
    """``obj`` pickled for a member; also says how ("lean" or "cloudpickle")."""
    buf = io.BytesIO()
    try:
        _Pickler(buf).dump(obj)
        return buf.getvalue(), "lean"
    except (_Unsupported, pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), "cloudpickle"
