"""Functions and classes defined in notebook cells, to other processes.

A cell's function lives in ``__main__``, a module with no file: the
standard library pickles it by reference (``__main__.f``) and a child
process -- multiprocessing's dragon children, Pool workers -- cannot find
it (spawn's children re-import the main module from its file; a kernel has
none). In the kernel, multiprocessing's pickler sends functions and classes
of ``__main__`` by value (cloudpickle), as ProcessTemplate already does for
callables (docs/python.md); everything else pickles as before.
"""

from __future__ import annotations

import pickle
import sys
import types

_installed = False


def _interactive_main(obj) -> bool:
    if getattr(obj, "__module__", None) != "__main__":
        return False
    main = sys.modules.get("__main__")
    return main is None or not getattr(main, "__file__", None) or "ipykernel" in str(getattr(main, "__file__", ""))


def _reducer_override(self, obj):
    if isinstance(obj, (types.FunctionType, type)) and _interactive_main(obj):
        import cloudpickle

        return pickle.loads, (cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL),)
    return NotImplemented


def install() -> None:
    global _installed
    if _installed:
        return
    from multiprocessing import reduction

    reduction.ForkingPickler.reducer_override = _reducer_override
    _installed = True
