"""The first code of a Python-callable member: unpickle the target from
the environment, run it, report an exception to the group's owner.

Exit code: 0 when the target returns, sys.exit's code, 1 after an exception.
A stop of the group (SIGINT) ends the member as a signal would end any
program, with no traceback.
"""

import binascii
import os
import sys

import _pickle
import _signal


def _report(errors: str, exc: BaseException, tb: str) -> None:
    """Sends the exception to the group's errors channel (best effort)."""
    if not errors:
        return
    try:
        from dragon import _core

        try:  # by value when its class lives in __main__, as the target did
            import cloudpickle

            pickled = cloudpickle.dumps(exc)
            _pickle.loads(pickled)
        except Exception:
            pickled = None
        report = _pickle.dumps({
            "puid": int(os.environ.get("DRAGON_PUID") or 0),
            "rank": int(os.environ.get("DRAGON_RANK") or -1),
            "type": type(exc).__qualname__,
            "message": str(exc),
            "traceback": tb,
            "pickled": pickled,
        })
        rt = _core.Runtime(os.environ["DRAGON_AGENT_SOCKET"], int(os.environ.get("DRAGON_PUID") or 0))
        # A full channel (the owner does not read it) drops the report; the
        # traceback is on stderr all the same.
        _core.Channel.attach(rt, errors).send(report, 1.0)
    except Exception as e:  # the traceback is on stderr already
        sys.stderr.write(f"dragon: could not report the exception to the group: {e}\n")


def main() -> None:
    env = os.environ
    n = int(env.pop("DRAGON_PY_TARGET_CHUNKS"))
    data = "".join(env.pop(f"DRAGON_PY_TARGET_{i}") for i in range(n))
    errors = env.pop("DRAGON_PY_ERRORS", "")
    for s in (sys.stdout, sys.stderr):
        try:
            s.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
    # What site would have given an interactive-minded target (python3 -S).
    import builtins

    if not hasattr(builtins, "exit"):
        import _sitebuiltins

        builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
        builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    code = 0
    try:
        fn, args, kwargs = _pickle.loads(binascii.a2b_base64(data))
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # the target may clean up on a stop
        result = fn(*args, **kwargs)
        if type(result).__name__ == "coroutine" and hasattr(result, "__await__"):
            import asyncio  # an async def target: run it to its end

            asyncio.run(result)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            sys.stderr.write(f"{e.code}\n")
            code = 1
    except KeyboardInterrupt:
        # Stopped (SIGINT): end as the signal would.
        sys.stdout.flush()
        sys.stderr.flush()
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
        code = 130
    except BaseException as e:
        import traceback

        tb = traceback.format_exc()
        sys.stderr.write(f"*** exception in the Python-callable member (rank {env.get('DRAGON_RANK', '?')}, "
                         f"puid {env.get('DRAGON_PUID', '?')}) ***\n{tb}")
        sys.stderr.flush()
        _report(errors, e, tb)
        code = 1
    sys.exit(code)
