"""python3 -m dragon.jupyter {install,spec,server,launch} (docs/jupyter.md)."""

from __future__ import annotations

import argparse
import os
import sys

USAGE = """\
python3 -m dragon.jupyter install [--user | --prefix DIR | --sys-prefix] [--name NAME]
    installs the kernelspec "Python 3 (Dragon)" (kernels that join the runtime they
    start in, or start their own)
python3 -m dragon.jupyter spec
    prints its kernel.json
python3 -m dragon.jupyter server [--port N] [jupyter server options...]
    a Jupyter server on 127.0.0.1 whose default kernel is the Dragon one (run it
    inside a runtime: dragon-orchestrate run ... -- python3 -m dragon.jupyter server)
python3 -m dragon.jupyter launch [dragon-orchestrate run options] [-- server options]
    both in one command (what dragon-jupyter does): a runtime (one node by default;
    --launcher virtual --nodes N; --launcher slurm) and the server inside it
"""


def _install(args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python3 -m dragon.jupyter install")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="~/.local/share/jupyter/kernels")
    where.add_argument("--prefix", help="<prefix>/share/jupyter/kernels")
    where.add_argument("--sys-prefix", action="store_true", help="sys.prefix/share/jupyter/kernels")
    p.add_argument("--name", default=None, help="the kernel's name (default: dragon)")
    a = p.parse_args(args)
    from dragon import jupyter

    prefix = sys.prefix if a.sys_prefix else a.prefix
    d = jupyter.install(user=a.user, prefix=prefix, name=a.name or jupyter.KERNEL_NAME)
    print(f"installed kernelspec {a.name or jupyter.KERNEL_NAME} ({jupyter.DISPLAY_NAME}) in {d}")
    return 0


def _spec(args: list[str]) -> int:
    import json

    from dragon import jupyter

    print(json.dumps(jupyter.kernel_spec(), indent=1))
    return 0


def _launch(args: list[str]) -> int:
    from dragon._runtime import orchestrate_path

    if "-h" in args[:1] or "--help" in args[:1]:
        print(USAGE)
        return 0
    if "--" in args:
        i = args.index("--")
        rt_opts, srv_opts = args[:i], args[i + 1:]
    else:
        rt_opts, srv_opts = args, []
    os.environ.pop("DRAGON_AGENT_SOCKET", None)
    if not any(o == "--patience" or o.startswith("--patience=") for o in rt_opts):
        # Ctrl-C: the server gets SIGINT and shuts its kernels down (each stops
        # what it started); 10 s for that before SIGTERM, as many before SIGKILL.
        rt_opts = ["--patience", "10", *rt_opts]
    cmd = [orchestrate_path(), "run", *rt_opts, "--", sys.executable, "-m", "dragon.jupyter", "server", *srv_opts]
    os.execv(cmd[0], cmd)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "install":
        return _install(rest)
    if cmd == "spec":
        return _spec(rest)
    if cmd == "server":
        from dragon.jupyter import server

        return server.main(rest)
    if cmd == "launch":
        return _launch(rest)
    sys.stderr.write(f"dragon.jupyter: unknown command {cmd!r}\n\n{USAGE}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
