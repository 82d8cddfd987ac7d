"""A node's pre-imported Python interpreter that forks members (the fast
start of docs/runtime.md): the agent starts one per interpreter, flags and
Python path the first time a ``fast_start`` member asks for it, and from
then on a member starts in the time of a fork instead of an interpreter
start-up and its imports.

The member is still the runtime's process: the zygote forks it as the
agent's child (one clone with CLONE_PARENT, from the C loop of
dragon._zfork.serve; where the kernel refuses, twice, from the loop here,
through a middle process, and the agent, a child subreaper, inherits it),
so the agent reaps it, reports its exit, signals and binds it as any member
it exec'd. The agent sends, on the socket it gave this process (fd
``DRAGON_ZYGOTE_FD``), frames of a 4-byte little-endian length and a body of
NUL-separated fields::

    spawn, cwd, cpus ("0,2"), fds ("111": which of stdin/stdout/stderr
    travel with the frame, SCM_RIGHTS), argc, argv..., env changes...

where an environment change is "K=V" (the member's differs from, or is not
in, the zygote's) or "K" (the zygote's variable K is not the member's), and
gets back ``ok <pid>`` or ``err <errno> <what>``; after the imports this
process sends ``ready <pid>`` once. End of file on the socket ends it.

A member gets what a fresh ``python3 [-S] -c code`` would have: its own
environment, working directory, binding, stdio, default signal handlers, a
new ``__main__`` and multiprocessing's process state; the imports of the
zygote (the list below, and ``DRAGON_ZYGOTE_PRELOAD``) are already there,
and ``PYTHONHASHSEED`` randomisation is shared with the zygote, as with
fork.
"""

import errno
import os
import socket
import struct
import sys

_HEAD = struct.Struct("<I")
MAX_FRAME = 64 * 1024 * 1024

# What a Python-callable member and a multiprocessing child import before
# their own code (`python3 -X importtime` of a dragon child).
PRELOAD = (
    "dragon._core", "dragon._runner", "dragon._runtime", "dragon._fnpickle", "dragon.exceptions",
    "dragon.mpbridge", "dragon.mpbridge.child", "dragon.mpbridge.popen", "dragon.mpbridge.queues",
    "dragon.mpbridge.wait", "dragon.infrastructure.connection", "dragon.infrastructure.policy",
    "dragon.native.process", "dragon.native.process_group", "dragon.native.queue", "dragon.native.machine",
    "multiprocessing", "multiprocessing.context", "multiprocessing.process", "multiprocessing.reduction",
    "multiprocessing.spawn", "multiprocessing.util", "multiprocessing.connection", "multiprocessing.queues",
    "multiprocessing.synchronize", "multiprocessing.resource_tracker", "pickle", "threading", "traceback",
    "binascii", "ctypes", "cloudpickle",
    # A Pool worker's (each import is megabytes of objects a worker would
    # otherwise make for itself, not share).
    "multiprocessing.pool", "dragon.mpbridge.pool", "pkgutil", "runpy",
)


class _Bad(Exception):
    """A malformed request: answered with EINVAL, the zygote goes on."""


def _preload() -> None:
    import importlib

    extra = [m for m in os.environ.pop("DRAGON_ZYGOTE_PRELOAD", "").split(",") if m.strip()]
    for name in (*PRELOAD, *extra):
        try:
            importlib.import_module(name.strip())
        except ImportError:
            pass  # optional (cloudpickle), or the user's: the member imports it itself
        except Exception as e:  # a module that fails at import fails in the member too, with its traceback
            sys.stderr.write(f"dragon zygote: preloading {name}: {e!r}\n")


def _recv_exact(sock: socket.socket, n: int, fds: list) -> bytes | None:
    """n bytes (None at end of file before the first); descriptors that
    arrive with them are appended to fds."""
    buf = bytearray()
    while len(buf) < n:
        data, got, _flags, _addr = socket.recv_fds(sock, n - len(buf), 8)
        fds.extend(got)
        if not data:
            if not buf:
                return None
            raise EOFError("the agent's socket ended inside a frame")
        buf += data
    return bytes(buf)


def _send(sock: socket.socket, text: str) -> None:
    body = text.encode()
    sock.sendall(_HEAD.pack(len(body)) + body)


def _parse(body: bytes, fds: list) -> dict:
    fields = body.split(b"\0")
    if len(fields) < 6 or fields[0] != b"spawn":
        raise _Bad(f"not a spawn request ({len(fields)} fields)")
    cwd, cpus, mask = fields[1], fields[2], fields[3]
    try:
        argc = int(fields[4])
        cpu_set = {int(c) for c in cpus.split(b",") if c}
    except ValueError as e:
        raise _Bad(f"bad number: {e}") from None
    if argc < 3 or 5 + argc > len(fields) or len(mask) != 3 or mask.count(b"1") != len(fds):
        raise _Bad(f"argc {argc}, fds {mask!r} with {len(fds)} descriptors")
    argv = [a.decode("utf-8", "surrogateescape") for a in fields[5:5 + argc]]
    if argv[-2] != "-c":
        raise _Bad("argv does not end with -c code")
    envset = [kv for kv in fields[5 + argc:] if b"=" in kv and not kv.startswith(b"=")]
    envunset = [k for k in fields[5 + argc:] if k and b"=" not in k]
    it = iter(fds)
    stdio = [next(it) if m == ord("1") else -1 for m in mask]
    return {"cwd": os.fsdecode(cwd), "cpus": cpu_set, "stdio": stdio, "argv": argv, "envset": envset,
            "envunset": envunset}


def _serve(sock: socket.socket, agent: int):
    """Answers spawn requests until end of file (then exits); returns, in a
    member only, its request. The loop is dragon._zfork's, in C, where it
    can clone members (the zygote then writes next to nothing between
    forks: a page it writes after a fork is one its members no longer
    share); else (or with DRAGON_ZYGOTE_FORK_TWICE=1, which the tests set
    to cover it) this one, with the double fork."""
    if _zserve is not None and os.environ.get("DRAGON_ZYGOTE_FORK_TWICE") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        ident = b"\0".join(k.encode() + b"=" for k in _IDENTITY)
        try:
            out = _zserve(sock.fileno(), agent, *_ROOM_AT, ident)
        except OSError as e:
            sys.stderr.write(f"dragon zygote: one-fork start unavailable ({e}); forking twice\n")
        else:
            if out[0]:
                return _adopt(sock, out)
            member = _answer(sock, agent, out[1], out[2])  # a request the kernel would not clone
            if member is not None:
                return member
    while True:
        fds: list = []
        try:
            head = _recv_exact(sock, _HEAD.size, fds)
            if head is None:
                os._exit(0)
            (n,) = _HEAD.unpack(head)
            if n > MAX_FRAME:
                raise EOFError(f"a {n}-byte frame")
            body = _recv_exact(sock, n, fds)
            if body is None:
                raise EOFError("the agent's socket ended inside a frame")
        except (OSError, EOFError) as e:
            sys.stderr.write(f"dragon zygote: {e}; exiting\n")
            os._exit(1)
        member = _answer(sock, agent, body, fds)
        if member is not None:
            return member


def _answer(sock: socket.socket, agent: int, body: bytes, fds: list):
    """One request, by the double fork: the member's request in the member,
    None in the zygote (answered)."""
    try:
        req = _parse(body, fds)
    except _Bad as e:
        for fd in fds:
            os.close(fd)
        _send(sock, f"err 22 bad request: {e}")
        return None
    refused = _check(req)
    if refused:
        for fd in fds:
            os.close(fd)
        _send(sock, f"err {refused}")
        return None
    member = _fork_twice(sock, agent, req)
    if member is None:
        for fd in fds:
            os.close(fd)
    return member


try:
    from dragon._zfork import die_with_parent as _die_with_parent
    from dragon._zfork import serve as _zserve
    from dragon._zfork import unblock_signals as _unblock_signals
except ImportError:
    _zserve = _die_with_parent = _unblock_signals = None


def _adopt(sock: socket.socket, state: tuple) -> dict:
    """In a member the C loop cloned and set up (process group, stdio,
    directory, cpus, environment, parent; its descriptors but stdio
    closed): the rest, which needs Python's objects: the signal handlers,
    os.environ's dict, then the signals unblocked. Returns its request
    (its argv)."""
    _, argv, sets, unsets = state
    import signal

    try:
        for sig, want in _SIGNALS_TO_RESET:
            signal.signal(sig, want)
        # (os.environ's own dict: libc's environment is set already)
        data = os.environ._data
        for k, v in sets:
            data[k] = v
        for k in unsets:
            data.pop(k, None)
        _unblock_signals()
    except KeyboardInterrupt:
        # Stopped (SIGINT) as it started: it ends as that signal ends a process.
        _end_by_sigint()
    sock.detach()  # (closed already)
    return {"argv": argv}


def _fork_twice(sock: socket.socket, agent: int, req: dict):
    """Forks the member through a short-lived middle process, which forks
    it and exits (the agent, a child subreaper, inherits it), and answers
    the agent; returns req in the member, None in the zygote."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        middle = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        _send(sock, f"err {e.errno} fork: {e.strerror}")
        return None
    if middle == 0:
        try:
            # A member that dies before the middle exits must stay a zombie,
            # for the agent to reap once it inherits it: not auto-reaped as
            # the zygote's ignored SIGCHLD would.
            import signal

            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # The member starts with every signal blocked (a group stopped
            # right after its start signals members still setting up): its
            # set-up unblocks them once its own handlers are in place.
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            pid = os.fork()
        except BaseException as e:
            _write_quietly(w, f"err {getattr(e, 'errno', None) or 11} fork: {e}\n")
            os._exit(0)
        if pid == 0:
            os.close(r)
            return _become(sock, agent, req, w)
        _write_quietly(w, f"pid {pid}\n")
        os._exit(0)
    os.close(w)
    # The answer is the member's pid, from the middle process: the member's
    # own set-up (what _check could not foresee) fails as its exit 127 with
    # the reason on its stderr. Neither the middle's exit nor the member's
    # set-up is waited for (SIGCHLD is ignored here: nothing to reap).
    pid, error, buf = 0, "", b""
    while not error and not pid:
        data = os.read(r, 4096)
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            word, _, rest = line.decode(errors="replace").partition(" ")
            if word == "pid":
                pid = int(rest)
            elif word == "err" and not error:
                error = rest
    os.close(r)
    if error or pid <= 0:
        _send(sock, f"err {error or '11 the member did not start'}")
    else:
        _send(sock, f"ok {pid}")
    return None


def _check(req: dict) -> str:
    """What exec would refuse before the program runs, checked here so that
    it is the member's start error: its directory and its cpus."""
    cwd = req["cwd"]
    if cwd:
        if not os.path.isdir(cwd):
            return f"{2 if not os.path.exists(cwd) else 20} chdir {cwd}"
        if not os.access(cwd, os.X_OK):
            return f"13 chdir {cwd}"
    if req["cpus"] and not req["cpus"] <= os.sched_getaffinity(0):
        return f"22 affinity {sorted(req['cpus'])}"
    return ""


def _write_quietly(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass


def _become(sock: socket.socket, agent: int, req: dict, report: int):
    """In a member of the double fork (a cloned one is set up in C, by
    dragon._zfork's setup_member, the same steps): takes the request's
    process group, signals, stdio, directory, binding and environment, then
    waits to be the agent's child and to die with it. On a failure it says why on its stderr and exits
    127 (the zygote has answered already)."""
    import signal
    import time

    step = "setpgid"
    try:
        os.setpgid(0, 0)
        step = "signals"
        for sig, want in _SIGNALS_TO_RESET:
            signal.signal(sig, want)
        step = "stdio"
        null = os.open(os.devnull, os.O_RDWR)
        for target, fd in enumerate(req["stdio"]):
            os.dup2(fd if fd >= 0 else null, target)
        step = "chdir"
        if req["cwd"]:
            os.chdir(req["cwd"])
        step = "affinity"
        if req["cpus"]:
            os.sched_setaffinity(0, req["cpus"])
        step = "environment"
        # (os.environ's own dict and libc's, directly: os.environ's methods
        # are Python code, and each function a member runs for the first
        # time writes to its code object's page)
        data, putenv, unsetenv = os.environ._data, os.putenv, os.unsetenv
        for kv in req["envset"]:
            k, _, v = kv.partition(b"=")
            putenv(k, v)
            data[k] = v
        for k in req["envunset"]:
            if k in data:
                unsetenv(k)
                del data[k]
        _publish_environ(req["envset"])
        if report >= 0:
            os.close(report)
            report = -1
        # Run only as the agent's child (the middle process is exiting), and
        # die with the agent.
        step = "parent"
        deadline = time.monotonic() + 10.0
        while os.getppid() != agent:
            if os.getppid() == 1 or time.monotonic() > deadline:
                raise OSError(3, "the agent is gone")
            os.sched_yield()
        if _die_with_parent is not None:
            _die_with_parent(int(signal.SIGKILL))
        else:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != agent:
            raise OSError(3, "the agent is gone")
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
    except KeyboardInterrupt:
        # Stopped (SIGINT) while it set up: it ends as that signal ends a process.
        _end_by_sigint()
    except BaseException as e:
        code = getattr(e, "errno", None) or 5
        try:
            if report >= 0:
                os.close(report)
            os.write(2, f"dragon: the fast-started process {os.getpid()} could not start ({step}): "
                        f"{type(e).__name__}: {e} [errno {code}]\n".encode())
        finally:
            os._exit(127)
    # Nothing of the zygote's stays open: stdio only, as exec gives.
    sock.detach()
    os.closerange(3, 1 << 20)
    return req


# What differs from a fresh interpreter's signal dispositions here (found
# once): what a member sets back, and nothing else (each change writes to,
# and so copies, pages it shares with the zygote).
_SIGNALS_TO_RESET: list = []


def _fresh_signals() -> list:
    """(signal, handler) pairs a member needs to have a fresh interpreter's
    dispositions: SIGINT raises KeyboardInterrupt, SIGPIPE and SIGXFSZ
    ignored, the rest the default."""
    import signal

    out = []
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        want = signal.default_int_handler if sig == signal.SIGINT else (
            signal.SIG_IGN if sig in (signal.SIGPIPE, signal.SIGXFSZ) else signal.SIG_DFL)
        try:
            if signal.getsignal(sig) != want:
                out.append((sig, want))
        except (OSError, ValueError):
            pass
    return out


# -c code -> its code object, compiled in the zygote (dragon.native.process._BOOT).
_COMPILED: dict = {}

# Read first in /proc/<pid>/environ: who the process is.
_IDENTITY = ("DRAGON_PUID", "DRAGON_RUN_ID", "DRAGON_NODE_ID", "DRAGON_GROUP_ID", "DRAGON_RANK", "DRAGON_NRANKS",
             "DRAGON_AGENT_SOCKET")


_ROOM = b"DRAGON_ZYGOTE_ENV_ROOM="


_ROOM_AT: tuple = (0, 0)


def _env_room() -> tuple:
    """(address, length) of the value-and-name of DRAGON_ZYGOTE_ENV_ROOM in
    this process's initial environment block (0, 0 if not there)."""
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        start, end = int(fields[50 - 3]), int(fields[51 - 3])  # env_start, env_end (proc(5))
        block = ctypes.string_at(start, end - start)
    except (OSError, ValueError, IndexError):
        return (0, 0)
    if block.startswith(_ROOM):
        at = 0
    else:
        at = block.find(b"\0" + _ROOM) + 1
        if at <= 0:
            return (0, 0)
    room = block.find(b"\0", at) - at
    return (start + at, room) if room > 0 else (0, 0)


def _end_by_sigint():
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(128 + signal.SIGINT)


def _publish_environ(changed: list) -> None:
    """Writes the member's own variables (``changed``: the "K=V" entries its
    environment has and the zygote's has not, identity first) over the room
    the agent left in the zygote's initial environment block (the variable
    DRAGON_ZYGOTE_ENV_ROOM, which the member has unset: libc no longer
    points into it), so that /proc/<pid>/environ shows them and liveness
    checks that read it (host.is_process, the DDict client) recognise the
    member. The rest of the block is the zygote's environment, which libc
    still uses for the variables the member did not change."""
    at, room = _ROOM_AT
    if room <= 0:
        return
    import ctypes

    ident = tuple(k.encode() + b"=" for k in _IDENTITY)
    order = [kv for kv in changed if kv.startswith(ident)] + [
        kv for kv in changed if not kv.startswith(ident) and not kv.startswith(b"DRAGON_PY_TARGET")]
    blob = bytearray()
    for kv in order:
        if len(blob) + len(kv) + 1 > room:
            break
        blob += kv + b"\0"
    # (the rest: cleared by the zygote, but for the variable's name)
    blob += b"\0" * max(1, len(_ROOM) + 1 - len(blob))
    ctypes.memmove(at, bytes(blob), min(room, len(blob)))


# DRAGON_ZYGOTE_MAIN's module (a Pool's parent's main script), imported once
# here as each spawn-style child would import it; None without one.
_MAIN = None


def _preload_main():
    """The main script a Pool's workers import (their parent's, named by
    DRAGON_ZYGOTE_MAIN, an absolute path: a zygote of its own), run as
    __mp_main__ exactly as multiprocessing.spawn.prepare runs it in each
    child: its ``if __name__ == "__main__":`` block does not run, its
    imports and definitions do, once per node instead of once per worker.
    None if there is none or it fails (each worker then imports it)."""
    path = os.environ.get("DRAGON_ZYGOTE_MAIN", "")
    if not os.path.isabs(path) or not os.path.isfile(path):
        return None
    import runpy
    import types

    module = types.ModuleType("__mp_main__")
    try:
        module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
    except BaseException as e:  # each worker imports it itself, and fails as it would
        sys.stderr.write(f"dragon zygote: preloading the main module {path}: {e!r}\n")
        return None
    return module


def _reset_python_state(argv: list) -> dict:
    """What a fresh interpreter has that the zygote's imports changed: a new
    __main__, sys.argv, multiprocessing's idea of the current process."""
    import types

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    if _MAIN is not None:
        # The parent's main module, imported here once (spawn.prepare skips
        # a __main__ whose __file__ is the one it would import); the -c code
        # runs in a namespace of its own, not in it.
        sys.modules["__main__"] = sys.modules["__mp_main__"] = _MAIN
    else:
        sys.modules["__main__"] = main
    sys.argv = ["-c"]
    mp_process = sys.modules.get("multiprocessing.process")
    if mp_process is not None:
        import itertools

        # (its class is deleted from the module: the zygote's object has it)
        mp_process._current_process = type(mp_process._current_process)()
        mp_process._parent_process = None
        mp_process._process_counter = itertools.count(1)
        mp_process._children = set()
    return main.__dict__


def main() -> None:
    fd = int(os.environ.pop("DRAGON_ZYGOTE_FD"))
    agent = int(os.environ.pop("DRAGON_ZYGOTE_AGENT"))
    _preload()
    global _MAIN
    _MAIN = _preload_main()
    try:  # the code every Python-callable member runs, compiled once here
        from dragon.native.process import _BOOT

        _COMPILED[_BOOT] = compile(_BOOT, "<string>", "exec")
    except ImportError:
        pass
    _warm()
    import gc

    # What the imports made stays out of the collector's way: members do not
    # touch (and copy) those pages when they collect.
    gc.collect()
    gc.freeze()
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the middle processes: reaped by the kernel
    global _SIGNALS_TO_RESET, _ROOM_AT
    _SIGNALS_TO_RESET = _fresh_signals()
    _ROOM_AT = _env_room()
    if _ROOM_AT[1] > 0:
        # Cleared once here, where every member shares it: a member then
        # writes (and copies) only the pages its own variables take.
        import ctypes

        # (but for the variable's name: libc's entry stays a variable, which
        # each member unsets)
        name = len(_ROOM)
        ctypes.memset(_ROOM_AT[0] + name, 0, _ROOM_AT[1] - name)
    sock = socket.socket(fileno=fd)
    _send(sock, f"ready {os.getpid()}")
    req = _serve(sock, agent)
    code = req["argv"][-1]
    try:
        namespace = _reset_python_state(req["argv"])
    except KeyboardInterrupt:  # stopped (SIGINT) as it started: it ends as that signal ends a process
        _end_by_sigint()
    del req, sock
    _run(code, namespace)


def _warm() -> None:
    """Runs here, many times, the Python every member runs first, so that
    the interpreter has specialised it before the members share it: 3.11
    counts calls and executions in a function's code object and rewrites
    its bytecode as it specialises, and in a member each such write copies
    a page of the zygote's. What a member then does for itself is what it
    must (its variables, its objects), not this."""
    import builtins

    if not hasattr(builtins, "exit"):  # (what the runner gives a target under python3 -S)
        import _sitebuiltins

        builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
        builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    env = os.environ
    for i in range(64):
        env["DRAGON_ZYGOTE_WARM"] = str(i)
        int(env.get("DRAGON_ZYGOTE_WARM", "0"))
        env.pop("DRAGON_ZYGOTE_WARM")
        env.pop("DRAGON_ZYGOTE_WARM", None)
    try:
        import _pickle
        import types

        from dragon._runner import main as function
        from dragon.infrastructure.connection import _dumps

        mp_process = sys.modules.get("multiprocessing.process")
        # a target and its arguments (by reference, as a member's come), and
        # the object a member's _reset_python_state makes
        sample = (function, ({"key": [1, 2.5, "text", b"bytes", None, True]}, (3, -4)), {"kw": 1})
        for _ in range(64):
            _pickle.loads(_dumps(sample))
            types.ModuleType("__main__")
            if mp_process is not None:
                type(mp_process._current_process)()
    except Exception:  # (an optimisation only)
        pass


def _status(code) -> int:
    """The exit status an interpreter gives sys.exit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:
        pass
    return 1


def _run(code: str, namespace: dict) -> None:
    """Runs the member's code as ``python -c`` would, then ends it as a fork
    child ends, not with the interpreter's teardown: that would write to
    (and so copy, a page fault each) every page of the zygote's heap it
    shares, tens of ms per member. Non-daemon threads are joined, atexit
    handlers (weakref.finalize, multiprocessing's finalizers) run and open
    files are flushed, as at an interpreter's exit; other objects' __del__
    at teardown do not run (as in the standard library's fork children)."""
    import signal

    status = 0
    try:
        exec(_COMPILED.get(code) or compile(code, "<string>", "exec"), namespace)
    except SystemExit as e:
        status = _status(e.code)
    except KeyboardInterrupt:
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # end as the signal ends a program
        os.kill(os.getpid(), signal.SIGINT)
        status = 128 + signal.SIGINT
    except BaseException:
        try:
            sys.excepthook(*sys.exc_info())
        except Exception:
            pass
        status = 1
    try:
        _finish()
    finally:
        os._exit(status)


def _finish() -> None:
    threading = sys.modules.get("threading")
    try:
        if threading is not None:
            threading._shutdown()
    except BaseException:
        pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        pass
    _flush_files()


def _flush_files() -> None:
    """Flushes the files the member opened and did not close (those in the
    young generations: the zygote's own objects are frozen), text before
    binary, then stdout and stderr."""
    import gc
    import io

    texts, binaries = [], []
    for gen in range(3):
        for o in gc.get_objects(generation=gen):
            if isinstance(o, io.TextIOWrapper):
                texts.append(o)
            elif isinstance(o, (io.BufferedWriter, io.BufferedRandom)):
                binaries.append(o)
    for f in (*texts, *binaries, sys.stdout, sys.stderr):
        try:
            if f is not None and not f.closed:
                f.flush()
        except Exception:
            pass
