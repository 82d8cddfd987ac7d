"""What a Python-callable member needs to rebuild functions pickled by value
(dragon._fnpickle): only builtin modules, so that a member starts fast."""

import builtins
import marshal
import sys

_FunctionType = type(lambda: None)
_CellType = type((lambda x: lambda: x)(0).__closure__[0])


class Empty:
    """Marks a closure cell that had no value."""


def module(name):
    """A module, by name (modules travel as their names)."""
    __import__(name)
    return sys.modules[name]


def make_function(code, base_globals, name, ncells):
    """The function's skeleton: code and shared module globals, empty
    cells; set_function_state fills in the rest (so it may refer to itself)."""
    base_globals.setdefault("__builtins__", builtins)
    cells = tuple(_CellType() for _ in range(ncells)) if ncells else None
    return _FunctionType(marshal.loads(code), base_globals, name, None, cells)


def set_function_state(fn, state):
    names, defaults, kwdefaults, closure, qualname, module_name, doc, attrs = state
    fn.__globals__.update(names)
    fn.__defaults__ = defaults
    fn.__kwdefaults__ = kwdefaults
    for cell, value in zip(fn.__closure__ or (), closure):
        if value is not Empty:
            cell.cell_contents = value
    fn.__qualname__ = qualname
    fn.__module__ = module_name
    fn.__doc__ = doc
    fn.__dict__.update(attrs)
    return fn
