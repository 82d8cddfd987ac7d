"""CPython's own multiprocessing tests (Debian's libpython3.11-testsuite,
``test/_test_multiprocessing.py``) installed for one start method, as
CPython's ``test_multiprocessing_spawn.py`` does::

    install_tests_in_module_dict(globals(), "dragon")

The start method is $DRAGON_MP_TEST_METHOD (default ``dragon``). The
``WithManager*`` and ``WithThreads*`` classes are left out: they test the
manager and thread back-ends, the same for every start method. Tests the
``dragon`` method does not pass yet are skipped with their reason from
``skips.txt`` (one file, one line each); the other methods run unchanged.

Run through run_cpython.py, which compares the methods in one session.
"""

from __future__ import annotations

import fnmatch
import os
import pathlib
import unittest

import dragon  # noqa: F401  (makes the "dragon" start method known)
import test._test_multiprocessing as _tm

METHOD = os.environ.get("DRAGON_MP_TEST_METHOD", "dragon")
CONFIG = os.environ.get("DRAGON_MP_TEST_CONFIG", METHOD)  # dragon, dragon-2nodes, spawn...
SKIPS = pathlib.Path(__file__).with_name("skips.txt")
LEFT_OUT = ("WithManager", "WithThreads")

_tm.install_tests_in_module_dict(globals(), METHOD)


def read_skips(path: pathlib.Path = SKIPS) -> list[tuple[str, set[str], str]]:
    """(pattern, configs, reason) per line: ``Class.test  configs  reason``,
    configs a comma list of globs over dragon, dragon-2nodes (``dragon*``: both)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise ValueError(f"{path}:{n}: want 'Class.test configs reason', got {line!r}")
        out.append((parts[0], set(parts[1].split(",")), parts[2]))
    return out


def _applies(configs: set[str]) -> bool:
    return any(fnmatch.fnmatchcase(CONFIG, c) for c in configs)


def load_tests(loader, standard_tests, pattern):
    skips = [(p, r) for p, c, r in read_skips() if METHOD == "dragon" and _applies(c)]
    suite = unittest.TestSuite()
    for name, obj in sorted(globals().items()):
        if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)) or name.startswith(LEFT_OUT):
            continue
        for test in loader.loadTestsFromTestCase(obj):
            tid = f"{name}.{test._testMethodName}"
            reason = next((r for p, r in skips if fnmatch.fnmatchcase(tid, p)), None)
            if reason is not None:
                setattr(obj, test._testMethodName, unittest.skip(reason)(getattr(obj, test._testMethodName)))
                test = obj(test._testMethodName)
            suite.addTest(test)
    return suite
