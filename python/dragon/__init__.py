"""Dragon: an MPI-interoperable HPC runtime, from Python.

Start processes as groups on every node of the runtime, pass messages
through channels, and run Python callables as processes::

    from dragon.native.process_group import ProcessGroup
    from dragon.native.process import ProcessTemplate

    with ProcessGroup() as pg:
        pg.add_process(8, ProcessTemplate(work, args=(1,)))
        pg.start()
        pg.join()

Under ``dragon-orchestrate run`` the package joins that runtime; a plain
``python3 script.py`` starts a one-node runtime of its own on first use and
tears it down at exit (see docs/python.md).
"""

from dragon.exceptions import (
    DragonConnectionError,
    DragonError,
    DragonNotFoundError,
    DragonProcessGroupError,
    DragonTimeoutError,
    DragonUserCodeError,
    DragonValueError,
)
from dragon._runtime import current_runtime, start_runtime, stop_runtime

__version__ = "0.1.0"

__all__ = [
    "DragonConnectionError",
    "DragonError",
    "DragonNotFoundError",
    "DragonProcessGroupError",
    "DragonTimeoutError",
    "DragonUserCodeError",
    "DragonValueError",
    "current_runtime",
    "start_runtime",
    "stop_runtime",
]
