"""Processes: ``ProcessTemplate`` (what a ProcessGroup member runs),
``Process`` (one process of its own) and ``Popen`` (its constants, and a
subprocess-like single process).

A template's target is an executable (a path, or a name searched in PATH) or
a Python callable. A callable is pickled together with its arguments
(dragon._fnpickle: by value for functions of __main__, cloudpickle as the
fallback) and run by this same interpreter in the child (not by re-importing
the main module, as multiprocessing's spawn does); an exception it raises is
printed there and reported back to the group (``DragonUserCodeError``).
"""

from __future__ import annotations

import base64
import codecs
import os
import shutil
import sys
import time
from typing import Any, Callable

from dragon.infrastructure.policy import Policy

# Cloudpickled (target, args, kwargs) travels in the environment, split into
# pieces under the kernel's 128 KiB limit per variable; this bounds the total.
PAYLOAD_CHUNK = 96 * 1024
PAYLOAD_MAX = 1024 * 1024


class Popen:
    """Standard-stream constants (as subprocess's), and a single process
    started like ``subprocess.Popen``: ``Popen(["hostname"], stdout=Popen.PIPE)``."""

    PIPE = -1
    STDOUT = -2
    DEVNULL = -3

    def __init__(self, args, executable=None, stdin=None, stdout=None, stderr=None, cwd=None, env=None,
                 policy: Policy | None = None):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if executable is not None:
            argv[0] = executable
        self.args = args
        self._proc = Process(argv[0], args=tuple(argv[1:]), cwd=cwd, env=env, stdin=stdin, stdout=stdout,
                             stderr=stderr, policy=policy)
        self._proc.start()
        self.stdin = self._proc.stdin_conn
        self.stdout = self._proc.stdout_conn
        self.stderr = self._proc.stderr_conn

    @property
    def puid(self) -> int:
        return self._proc.puid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self._proc.join(timeout)
        if code is None:
            raise TimeoutError(f"Popen.wait: puid {self.puid} still runs after {timeout} s")
        return code

    def poll(self) -> int | None:
        return self._proc.join(0)

    def send_signal(self, sig: int) -> None:
        self._proc.send_signal(sig)

    def terminate(self) -> None:
        self._proc.terminate()

    def kill(self) -> None:
        self._proc.kill()


def _redirect(value, name: str) -> tuple[str, str]:
    """A stdin/stdout/stderr argument as (kind, file pattern)."""
    if value is None:
        return ("discard" if name == "stdin" else "inherit", "")
    if value == Popen.PIPE:
        return ("pipe", "")
    if value == Popen.DEVNULL:
        return ("discard", "")
    if value == Popen.STDOUT:
        raise ValueError(f"{name}=Popen.STDOUT is not supported yet: pipe or redirect stderr on its own")
    if isinstance(value, (str, os.PathLike)):
        return ("file", os.fspath(value))
    raise ValueError(f"{name}: expected None, Popen.PIPE, Popen.DEVNULL or a file path, got {value!r}")


def _python_path() -> list[str]:
    """This interpreter's sys.path, as absolute paths, for the child."""
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]


# The member is `python3 -S -c BOOT`: no site (our sys.path replaces the one
# it would build, .pth entries included), a stop (SIGINT) ends it as any
# program until the target runs, then dragon._runner runs the target. Only
# builtin modules and os load before the target's own imports.
PATH_SEP = "\x1e"
_BOOT = ("import _signal;_signal.signal(2,_signal.SIG_DFL);"
         f"import sys,os;sys.path[:]=os.environ.pop('DRAGON_PY_PATH').split({PATH_SEP!r});"
         "from dragon._runner import main;main()")


class ProcessTemplate:
    """One kind of ProcessGroup member.

    ``target`` is an executable path or name (searched in PATH, then in
    ``cwd``), or a Python callable run with ``args`` and ``kwargs``. ``cwd``
    defaults to this process's working directory; ``env`` adds variables to
    the runtime's environment. ``stdin`` is None (no input), ``Popen.PIPE``
    (written by the group's owner) or a file; ``stdout``/``stderr`` are None
    (to dragon-orchestrate's terminal), ``Popen.PIPE`` (read by the owner),
    ``Popen.DEVNULL`` or a file path pattern (``%r`` is the rank).
    A callable's process starts as a fork of its node's pre-imported
    interpreter once that is ready (``fast_start``; docs/runtime.md), which
    shares the interpreter's imports and hash seed; ``fast_start=False``
    asks for a fresh interpreter."""

    PIPE = Popen.PIPE
    STDOUT = Popen.STDOUT
    DEVNULL = Popen.DEVNULL

    def __init__(self, target: str | os.PathLike | Callable[..., Any], args: tuple = None, kwargs: dict = None,
                 cwd: str | os.PathLike | None = ".", env: dict | None = None, stdin=None, stdout=None, stderr=None,
                 policy: Policy | None = None, options: Any = None, fast_start: bool = True):
        self.args = tuple(args) if args is not None else ()
        self.kwargs = dict(kwargs) if kwargs is not None else {}
        self.cwd = os.getcwd() if cwd in (None, ".") else os.path.abspath(os.fspath(cwd))
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        for k in self.env:
            if not k or "=" in k:
                raise ValueError(f"env: {k!r} is not a variable name")
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self._stdin = _redirect(stdin, "stdin")
        self._stdout = _redirect(stdout, "stdout")
        self._stderr = _redirect(stderr, "stderr")
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy, not {type(policy).__name__}")
        # The policy of the `with Policy(...)` blocks around the creation counts.
        self.policy = Policy.merge(Policy.thread_policy(), policy) if Policy.thread_policy() else policy
        self.options = options
        self.is_python = callable(target) and not isinstance(target, (str, bytes, os.PathLike))
        # A callable's process may start as a fork of its node's pre-imported
        # interpreter (docs/runtime.md, "Fast start"); False: a fresh one.
        self.fast_start = bool(fast_start) and self.is_python
        if self.is_python:
            import inspect

            if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
                raise ValueError(f"ProcessTemplate: {getattr(target, '__qualname__', target)!r} is a generator "
                                 "function: calling it runs nothing (wrap the loop in a plain function)")
        self._payload: list[str] | None = None
        self.pickled_with = ""  # "lean" or "cloudpickle", once pickled
        if self.is_python:
            self._fn = target
            self.target = sys.executable
        else:
            if isinstance(target, bytes):
                target = target.decode()
            self.target = self._resolve(os.fspath(target))
            if self.kwargs:
                raise ValueError("kwargs are for Python-callable targets; pass an executable's options in args")

    def _resolve(self, target: str) -> str:
        if not target:
            raise ValueError("ProcessTemplate: empty target")
        if "/" in target:
            path = target if os.path.isabs(target) else os.path.join(self.cwd, target)
            if not os.path.exists(path):
                raise FileNotFoundError(f"ProcessTemplate: {target!r} does not exist (cwd {self.cwd})")
            return path
        if shutil.which(target) or os.path.exists(os.path.join(self.cwd, target)):
            return target if shutil.which(target) else os.path.join(self.cwd, target)
        raise FileNotFoundError(f"ProcessTemplate: {target!r} is not in PATH nor in {self.cwd}")

    def get_original_python_parameters(self) -> tuple[Callable, tuple, dict]:
        if not self.is_python:
            raise ValueError("not a Python-callable template")
        return self._fn, self.args, self.kwargs

    # ---- what the runtime gets -------------------------------------------------------

    def payload_env(self) -> list[str]:
        """The pickled callable as environment pieces (computed once)."""
        if self._payload is None:
            from dragon import _fnpickle

            try:
                data, self.pickled_with = _fnpickle.dumps((self._fn, self.args, self.kwargs))
            except Exception as e:
                raise ValueError(f"ProcessTemplate: cannot pickle the target {self._fn!r} with its arguments: "
                                 f"{e}") from e
            text = base64.b64encode(data).decode()
            if len(text) > PAYLOAD_MAX:
                raise ValueError(f"ProcessTemplate: the pickled target and arguments are {len(data)} bytes; at most "
                                 f"{PAYLOAD_MAX * 3 // 4} can be passed (send large data through a channel)")
            pieces = [text[i:i + PAYLOAD_CHUNK] for i in range(0, len(text), PAYLOAD_CHUNK)] or [""]
            self._payload = [f"DRAGON_PY_TARGET_CHUNKS={len(pieces)}"] + [
                f"DRAGON_PY_TARGET_{i}={p}" for i, p in enumerate(pieces)]
        return self._payload

    def argv(self) -> list[str]:
        if self.is_python:
            # DRAGON_PY_SITE=1: members run site (sitecustomize, .pth import
            # lines such as editable installs' finders) at its cost per member.
            if os.environ.get("DRAGON_PY_SITE") == "1":
                return [sys.executable, "-c", _BOOT]
            return [sys.executable, "-S", "-c", _BOOT]
        return [self.target, *[os.fspath(a) for a in self.args]]

    def environment(self, errors_channel: str | None) -> list[str]:
        env = [f"{k}={v}" for k, v in self.env.items()]
        if self.is_python:
            env += self.payload_env()
            env.append("DRAGON_PY_PATH=" + PATH_SEP.join(_python_path()))
            if errors_channel:
                env.append("DRAGON_PY_ERRORS=" + errors_channel)
        return env

    def redirects(self) -> dict[str, str]:
        return {"stdin": self._stdin[0], "stdin_path": self._stdin[1], "stdout": self._stdout[0],
                "stdout_path": self._stdout[1], "stderr": self._stderr[0], "stderr_path": self._stderr[1]}

    def __repr__(self) -> str:
        what = getattr(self._fn, "__qualname__", repr(self._fn)) if self.is_python else self.target
        return f"ProcessTemplate({what}, args={self.args!r})"


class PipeConnection:
    """The reading (or, for stdin, writing) end of a member's pipe, as
    DragonHPC's Connection: ``recv()`` returns text until ``EOFError``."""

    def __init__(self, group, rank: int, stream: str):
        self._group, self._rank, self._stream = group, rank, stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._eof = False

    def recv_bytes(self, timeout: float | None = None) -> bytes:
        """The bytes written since the last call (waits for some); raises
        EOFError once the process ended and everything was read."""
        if self._eof:
            raise EOFError(f"rank {self._rank}'s std{self._stream} is at its end")
        data = self._group._core_group().read_output(self._rank, self._stream, timeout)
        if not data:
            self._eof = True
            raise EOFError(f"rank {self._rank}'s std{self._stream} is at its end")
        return data

    def recv(self, timeout: float | None = None) -> str:
        while True:
            try:
                text = self._decoder.decode(self.recv_bytes(timeout))
            except EOFError:
                tail = self._decoder.decode(b"", final=True)
                if tail:
                    return tail
                raise
            if text:
                return text

    def read(self) -> str:
        """Everything until the end."""
        out = []
        while True:
            try:
                out.append(self.recv())
            except EOFError:
                return "".join(out)

    def send(self, data: str | bytes) -> None:
        if self._stream != "in":
            raise OSError(f"std{self._stream} is read, not written")
        self._group._core_group().write_stdin(self._rank, data.encode() if isinstance(data, str) else bytes(data))

    def close(self) -> None:
        if self._stream == "in" and not self._eof:
            self._eof = True
            self._group._core_group().write_stdin(self._rank, b"", True)


class Process:
    """One process, started by the runtime (a group of one).

    ``Process(target, args, ...)`` then ``start()``; ``join(timeout)`` returns
    the exit code (minus the signal number if a signal ended it) or None on
    timeout. ``Process(None, ident=puid)`` is a member of a group this
    process started (its piped output: ``stdout_conn.recv()``)."""

    def __init__(self, target=None, args: tuple = None, kwargs: dict = None, cwd=".", env: dict | None = None,
                 ident: int | None = None, stdin=None, stdout=None, stderr=None, policy: Policy | None = None,
                 options: Any = None):
        from dragon.native.process_group import ProcessGroup, _member_by_puid

        if target is None:
            if ident is None:
                raise ValueError("Process: give a target, or ident= (the puid of a member)")
            found = _member_by_puid(int(ident))
            if found is None:
                raise LookupError(f"Process: no group of this process has a member with puid {ident}")
            self._group, self._rank = found
            self._started = True
            self._own = False
        else:
            tmpl = ProcessTemplate(target, args, kwargs, cwd, env, stdin, stdout, stderr, policy, options)
            self._group = ProcessGroup(ignore_error_on_exit=True)
            self._group.add_process(1, tmpl)
            self._rank = 0
            self._started = False
            self._own = True

    def start(self) -> None:
        if self._started:
            raise RuntimeError("Process.start: already started")
        self._group.start()
        self._started = True

    def _member(self) -> dict:
        return self._group._info()["processes"][self._rank]

    @property
    def puid(self) -> int:
        return self._member()["puid"] if self._started else 0

    @property
    def node(self) -> int:
        return self._member()["node"]

    @property
    def is_alive(self) -> bool:
        return self._started and self._member()["state"] in ("running", "pending")

    @property
    def returncode(self) -> int | None:
        m = self._member()
        if m["state"] != "exited":
            return None
        return -m["signal"] if m["signal"] else m["exit_code"]

    def join(self, timeout: float | None = None) -> int | None:
        if self._own:
            if self._group._final_info is None and not self._group._core_group().join(timeout):
                return None
            code = self.returncode
            t = self._group._template_of(self._rank)
            if Popen.PIPE not in (t.stdin, t.stdout, t.stderr):
                self._group.close()  # done: release it in the agent (its state stays readable)
            return code  # (with pipes, unread output stays readable until it is collected)
        # One member of a larger group: watch its state.
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.returncode) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            self._group._core_group().join(0.02)
        return code

    def send_signal(self, sig: int) -> None:
        self._group.send_signal(sig)

    def terminate(self) -> None:
        self._group.terminate()

    def kill(self) -> None:
        self._group.kill()

    @property
    def stdin_conn(self) -> PipeConnection | None:
        t = self._group._template_of(self._rank)
        return PipeConnection(self._group, self._rank, "in") if t.stdin == Popen.PIPE else None

    @property
    def stdout_conn(self) -> PipeConnection | None:
        t = self._group._template_of(self._rank)
        return self._group._pipe(self._rank, "out") if t.stdout == Popen.PIPE else None

    @property
    def stderr_conn(self) -> PipeConnection | None:
        t = self._group._template_of(self._rank)
        return self._group._pipe(self._rank, "err") if t.stderr == Popen.PIPE else None
