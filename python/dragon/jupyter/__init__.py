"""Jupyter in the Dragon runtime (docs/jupyter.md).

- ``python3 -m dragon.jupyter install [--user | --prefix P | --sys-prefix]
  [--name dragon]``: writes the kernelspec "Python 3 (Dragon)", whose kernels
  join the runtime they are started in, or start one (``dragon.jupyter.kernel``).
- ``python3 -m dragon.jupyter server [jupyter server options]``: a Jupyter
  server on 127.0.0.1 whose default kernel is the Dragon one; ``dragon-jupyter``
  runs it under ``dragon-orchestrate run`` (one command: the runtime and the
  server, its URL with the token printed).
"""

from __future__ import annotations

import json
import os
import sys

KERNEL_NAME = "dragon"
DISPLAY_NAME = "Python 3 (Dragon)"


def kernel_spec(python: str | None = None) -> dict:
    """The kernel.json of the Dragon kernel. The kernel runs this same
    interpreter with the package on its path (PYTHONPATH as it is here, plus
    the package's own directory)."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = [pkg_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != pkg_parent]
    return {
        "argv": [python or sys.executable, "-m", "dragon.jupyter.kernel", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "signal",
        # PYDEVD_DISABLE_FILE_VALIDATION: no debugpy warning about frozen modules at every start.
        "env": {"PYTHONPATH": os.pathsep.join(path), "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
        "metadata": {"debugger": False},
    }


def write_spec(directory: str, name: str = KERNEL_NAME) -> str:
    """Writes <directory>/<name>/kernel.json; returns that directory."""
    d = os.path.join(directory, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "kernel.json"), "w") as f:
        json.dump(kernel_spec(), f, indent=1)
        f.write("\n")
    return d


def install(user: bool = False, prefix: str | None = None, name: str = KERNEL_NAME) -> str:
    """Installs the kernelspec with jupyter_client's KernelSpecManager (as
    ``jupyter kernelspec install`` does); returns where it went."""
    import tempfile

    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory() as tmp:
        src = write_spec(tmp, name)
        return KernelSpecManager().install_kernel_spec(src, kernel_name=name, user=user, prefix=prefix)
