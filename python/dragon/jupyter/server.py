"""``python3 -m dragon.jupyter server``: jupyter_server's ServerApp on
127.0.0.1, its default kernel "Python 3 (Dragon)".

Run inside a runtime (``dragon-jupyter``, or ``dragon-orchestrate run ... --
python3 -m dragon.jupyter server``), its kernels inherit the runtime's
``DRAGON_*`` environment and join it. The kernelspec is written to a
directory of its own, put first on ``JUPYTER_PATH``; nothing is installed.
Once listening it prints ``dragon-jupyter: <url with token>`` on stdout
(the classic notebook's ``/tree`` page when python3-nbclassic is installed).
SIGINT or SIGTERM stops it at once (no confirmation prompt): its kernels
are shut down, then it exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile


def main(argv: list[str]) -> int:
    from jupyter_server.serverapp import ServerApp

    from dragon import jupyter

    spec_root = tempfile.mkdtemp(prefix="dragon-jupyter-")
    try:
        jupyter.write_spec(os.path.join(spec_root, "kernels"))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [spec_root] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p])

        class DragonServerApp(ServerApp):
            name = "dragon-jupyter"

            def init_signal(self):
                # Stop on the first SIGINT/SIGTERM (ServerApp would ask y/n on a terminal).
                def stop(sig, frame):
                    self.log.info("dragon-jupyter: signal %d: stopping the server and its kernels", sig)
                    self.io_loop.add_callback_from_signal(self._dragon_stop)

                signal.signal(signal.SIGINT, stop)
                signal.signal(signal.SIGTERM, stop)

            def _dragon_stop(self):
                self.stop()

        defaults = ["--ServerApp.ip=127.0.0.1", "--ServerApp.open_browser=False",
                    "--MappingKernelManager.default_kernel_name=" + jupyter.KERNEL_NAME]
        try:
            import nbclassic  # noqa: F401  (python3-nbclassic: the classic notebook pages, a server extension)

            page = "tree"
            defaults.append("--ServerApp.default_url=/tree")
        except ImportError:
            page = ""  # the REST API and websockets only: connect a front end to the URL
        if os.geteuid() == 0 and not any("allow_root" in a or a == "--allow-root" for a in argv):
            # Jupyter refuses root unless told; it listens on loopback with a token.
            defaults.append("--ServerApp.allow_root=True")
        app = DragonServerApp.instance()
        app.initialize(defaults + list(argv))
        where = "inside the runtime" if os.environ.get("DRAGON_AGENT_SOCKET") else "outside a runtime (kernels start their own)"
        print(f"dragon-jupyter: {app.connection_url}{page}?token={app.token}", flush=True)
        print(f"dragon-jupyter: kernels 'Python 3 (Dragon)' {where}; "
              f"server root {app.root_dir}; Ctrl-C stops", flush=True)
        app.start()
        return 0
    finally:
        shutil.rmtree(spec_root, ignore_errors=True)
