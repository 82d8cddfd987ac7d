"""The "Python 3 (Dragon)" kernel: ipykernel's IPython kernel, in a runtime.

Started by a Jupyter front end from the kernelspec ``python -m dragon.jupyter
install`` writes (``python3 -m dragon.jupyter.kernel -f <connection file>``).

- Under ``dragon-orchestrate`` (the server was started by ``dragon-jupyter``
  or by ``dragon-orchestrate run -- jupyter ...``) the kernel inherits
  ``DRAGON_AGENT_SOCKET`` and joins that runtime; anywhere else its first
  use of the package starts an embedded runtime (``$DRAGON_EMBEDDED_ARGS``
  or ``dragon.start_runtime(...)`` in a cell choose its nodes), stopped when
  the kernel exits, as for a plain ``import dragon`` script.
- Children's output: every group the kernel starts has the stdout and
  stderr it would have sent to the runtime's terminal piped back, and a
  thread writes it to the kernel's ``sys.stdout``/``sys.stderr``: the cell
  running then shows it (``dragon.jupyter._output``). What is left when a
  cell ends is written before the cell completes.
- A kernel interrupt (SIGINT) raises ``KeyboardInterrupt`` in the cell; the
  groups and processes that cell started (from its main thread) and that
  still run are then killed.
- Shutdown and restart kill every group the kernel started, then the
  interpreter's exit releases them and stops an embedded runtime (its
  processes and shared memory). A kernel whose server died (its parent
  changed) does the same and exits.
"""

from __future__ import annotations

import sys


def _make_kernel_class():
    from ipykernel.ipkernel import IPythonKernel

    from dragon.jupyter import _output

    class DragonKernel(IPythonKernel):
        implementation = "dragon-ipython"
        banner = "Python 3 (Dragon): ProcessGroup, multiprocessing's dragon start method, Pool and DDict reach every node"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            import dragon  # noqa: F401  (the dragon start method is known from here on)

            _output.enable()
            from dragon.jupyter import _pickling

            _pickling.install()  # cells' functions and classes reach mp children and Pool workers
            self._dragon_cell = 0
            self.shell.events.register("pre_run_cell", self._dragon_pre)
            self.shell.events.register("post_run_cell", self._dragon_post)
            _watch_parent()

        def _dragon_pre(self, info=None):
            self._dragon_cell += 1
            _output.set_cell(self._dragon_cell)

        def _dragon_post(self, result=None):
            cell = self._dragon_cell
            _output.set_cell(None)
            err = getattr(result, "error_in_exec", None)
            if isinstance(err, KeyboardInterrupt):
                n = _output.stop_cell(cell)
                if n:
                    sys.stderr.write(f"dragon: the interrupt stopped {n} group(s) this cell started\n")
            _output.drain_all()
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass

        def do_shutdown(self, restart):
            try:
                _output.stop_all()
            except Exception:
                pass
            return super().do_shutdown(restart)

    return DragonKernel


def _watch_parent() -> None:
    """The server that started the kernel is gone (killed, or its runtime
    ended): stop what the kernel started, stop an embedded runtime, exit.
    (ipykernel's own poller only notices a parent of pid 1, and exits with
    no cleanup; under a subreaper the orphan's parent is not 1.)"""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        try:
            from dragon import _runtime
            from dragon.jupyter import _output

            _output.stop_all()
            _runtime._at_exit()
        finally:
            os._exit(1)

    threading.Thread(target=watch, name="dragon-parent-watch", daemon=True).start()


def main(argv=None) -> None:
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance(argv=argv, kernel_class=_make_kernel_class())


if __name__ == "__main__":
    main()
