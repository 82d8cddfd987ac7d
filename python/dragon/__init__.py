"""Dragon: an MPI-interoperable HPC runtime, from Python.

Start processes as groups on every node of the runtime, pass messages
through channels, and run Python callables as processes::

    from dragon.native.process_group import ProcessGroup
    from dragon.native.process import ProcessTemplate

    with ProcessGroup() as pg:
        pg.add_process(8, ProcessTemplate(work, args=(1,)))
        pg.start()
        pg.join()

``import dragon`` also makes ``multiprocessing.set_start_method("dragon")``
known (docs/multiprocessing.md), without importing multiprocessing itself.

Under ``dragon-orchestrate run`` the package joins that runtime; a plain
``python3 script.py`` starts a one-node runtime of its own on first use and
tears it down at exit (see docs/python.md).

The names below load on first use, so that a member process importing
``dragon._runner`` pays only for what it uses.
"""

__version__ = "0.1.0"

_LAZY = {
    "DragonConnectionError": "dragon.exceptions",
    "DragonError": "dragon.exceptions",
    "DragonNotFoundError": "dragon.exceptions",
    "DragonProcessGroupError": "dragon.exceptions",
    "DragonTimeoutError": "dragon.exceptions",
    "DragonUserCodeError": "dragon.exceptions",
    "DragonValueError": "dragon.exceptions",
    "RemoteException": "dragon.exceptions",
    "current_runtime": "dragon._runtime",
    "start_runtime": "dragon._runtime",
    "stop_runtime": "dragon._runtime",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dragon' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


def _hook_multiprocessing():
    from dragon import mpbridge

    mpbridge.hook()


_hook_multiprocessing()
del _hook_multiprocessing
