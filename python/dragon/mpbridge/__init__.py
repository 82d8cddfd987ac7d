"""The ``dragon`` start method of :mod:`multiprocessing`.

``import dragon`` makes ``multiprocessing.set_start_method("dragon")`` and
``multiprocessing.get_context("dragon")`` known (HPE DragonHPC's spelling).
In that context:

- ``Process`` runs as a process of the runtime, on any of its nodes
  (:mod:`dragon.mpbridge.popen`);
- ``Pipe``/``Connection`` are channels (:mod:`dragon.infrastructure.connection`);
- ``Queue``/``JoinableQueue``/``SimpleQueue`` are runtime queues
  (:mod:`dragon.mpbridge.queues`);
- ``multiprocessing.connection.wait`` waits on Dragon connections, process
  sentinels and ordinary connections or sockets in one call
  (:mod:`dragon.mpbridge.wait`);
- ``cpu_count()`` is the cpus of every node of the runtime;
- ``multiprocessing.reduction.send_handle``/``recv_handle`` pass file
  descriptors over Dragon connections between processes of one host
  (:mod:`dragon.mpbridge.handles`).

Everything else (locks, managers, shared memory...) is the standard
library's, working between processes of one host; docs/multiprocessing.md
has the table. The other start methods are untouched: every patched
function asks the context it was called on and does what it did before
unless that context is ``dragon``.

``import dragon`` does not import multiprocessing: :func:`hook` waits for
``multiprocessing.context`` (and ``multiprocessing.connection``) to be
imported and installs the bridge right after, before multiprocessing binds
its module-level functions.
"""

from __future__ import annotations

import sys

_installed = False
_wait_installed = False


def install() -> None:
    """Registers the ``dragon`` context and patches the context methods it
    overrides (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    from multiprocessing import context

    from dragon.mpbridge import _context

    context._concrete_contexts["dragon"] = _context.DragonContext()
    _context.patch_base_context(context.BaseContext)
    _context.patch_process_init()
    from multiprocessing import reduction  # (imported by context already)

    from dragon.mpbridge import handles

    handles.patch(reduction)
    mp = sys.modules.get("multiprocessing")
    if mp is not None and hasattr(mp, "Pipe"):
        # multiprocessing bound its functions already: bind them again
        for name in _context.PATCHED + _context.SYNC:
            setattr(mp, name, getattr(context._default_context, name))
    if "multiprocessing.spawn" in sys.modules:
        _patch_preparation_data()
    if "multiprocessing.connection" in sys.modules:
        install_wait()


class _MethodName(str):
    """The start method in the preparation data of a spawn or forkserver
    child whose parent's start method is dragon: unpickling it in the child
    (before ``spawn.prepare`` sets the method) imports the bridge, so
    "dragon" is known there too."""

    def __reduce__(self):
        return (_method_name, (str(self),))


def _method_name(name: str) -> str:
    install()
    return name


def _patch_preparation_data() -> None:
    """After ``multiprocessing.spawn`` is imported (it imports the package's
    functions: not while the package itself loads)."""
    from multiprocessing import spawn

    original = spawn.get_preparation_data
    if getattr(original, "__wrapped__", None) is not None:
        return

    def get_preparation_data(name):
        d = original(name)
        if d.get("start_method") == "dragon":
            d["start_method"] = _MethodName("dragon")
        return d

    get_preparation_data.__wrapped__ = original
    get_preparation_data.__doc__ = original.__doc__
    spawn.get_preparation_data = get_preparation_data


def install_wait() -> None:
    """``multiprocessing.connection.wait`` learns Dragon connections."""
    global _wait_installed
    if _wait_installed:
        return
    _wait_installed = True
    from multiprocessing import connection

    from dragon.mpbridge import wait as _wait

    _wait.patch(connection)


class _Finder:
    """Installs the bridge when multiprocessing's modules are first imported."""

    _after = {"multiprocessing.context": install, "multiprocessing.connection": install_wait,
              "multiprocessing.spawn": lambda: _patch_preparation_data()}

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        then = cls._after.get(name)
        if then is None:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _Loader(spec.loader, then)
        return spec


class _Loader:
    def __init__(self, loader, then):
        self._loader = loader
        self._then = then

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._then()

    def __getattr__(self, name):
        return getattr(self._loader, name)


def hook() -> None:
    """Installs now what multiprocessing has loaded, the rest when it loads."""
    if "multiprocessing.context" in sys.modules:
        install()
    if any(m not in sys.modules for m in _Finder._after) and not any(f is _Finder for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder)


__all__ = ["hook", "install"]
