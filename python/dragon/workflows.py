"""YAML workflows from Python (docs/workflows.md).

Load a workflow file (validated and expanded by the same C++ loader the
command line uses), or build one in code, and run it with
``dragon-orchestrate run flow.yaml``::

    from dragon import workflows

    plan = workflows.load("flow.yaml")          # raises WorkflowError naming file:line:column
    result = workflows.run("flow.yaml", nodes=4, trace="trace.json")
    assert result.ok, result.output

    wf = workflows.Workflow("demo", parameters={"n": [1, 2, 3]})
    wf.step("sim", "process", "sh", args=["-c", "echo ${n} > out-${n}.txt"], outputs=["out-${n}.txt"])
    wf.step("sum", "python", "mymod:total", depends=["sim"])
    wf.run(directory="work")

A workflow runs as a runtime of its own (the runner is its head process), so
``run`` starts ``dragon-orchestrate`` as a child and waits for it; it is not
meant to be called from inside another Dragon run's process.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from dragon._runtime import orchestrate_path

__all__ = ["WorkflowError", "Plan", "RunResult", "Workflow", "load", "run", "ddict"]

DDICT_ENV = "DRAGON_WORKFLOW_DDICT"


def ddict():
    """In a step of a run whose steps name ``ddict:`` keys: the run's
    distributed dictionary (``dragon.data.ddict.DDict``), attached from
    ``DRAGON_WORKFLOW_DDICT``. ``ddict:KEY`` in ``inputs``/``outputs`` is
    the ``str`` key ``KEY`` of it. Call ``detach()`` when done (the runner
    destroys it at the end of the run)."""
    handle = os.environ.get(DDICT_ENV)
    if not handle:
        raise RuntimeError(f"{DDICT_ENV} is not set: this is not a step of a workflow whose "
                           "inputs or outputs name ddict: keys")
    from dragon.data.ddict import DDict
    return DDict.attach(handle)


class WorkflowError(ValueError):
    """A workflow file that does not load: the message names file:line:column and the field."""


@dataclass
class Plan:
    """What ``--dry-run`` printed: the instances in the order they may run."""
    name: str
    steps: int
    instances: list[str]
    text: str


@dataclass
class RunResult:
    """How a run ended: the exit code (0: everything done) and its output (progress and summary)."""
    returncode: int
    output: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _orch(args: Sequence[str], capture: bool, timeout: Optional[float]) -> subprocess.CompletedProcess:
    return subprocess.run([orchestrate_path(), "run", *args], capture_output=capture, text=True, timeout=timeout)


def load(path: str | os.PathLike) -> Plan:
    """Validates and expands ``path``; returns its plan, starts nothing.
    Raises WorkflowError with the loader's message when the file is bad."""
    r = _orch(["--dry-run", os.fspath(path)], True, 120)
    if r.returncode != 0:
        raise WorkflowError(r.stderr.strip().removeprefix("dragon-orchestrate: error: "))
    lines = r.stdout.splitlines()
    head = lines[0] if lines else ""
    name, _, counts = head.removeprefix("workflow ").rpartition(": ")
    steps = int(counts.split()[0]) if counts else 0
    instances = [l.split(". ", 1)[1].split(" [", 1)[0] for l in lines[1:] if l.startswith("  ") and ". " in l
                 and not l.startswith("     ")]
    return Plan(name=name, steps=steps, instances=instances, text=r.stdout)


def run(path: str | os.PathLike, *, launcher: Optional[str] = None, nodes: Optional[int] = None,
        resume: bool = False, fail_fast: bool = False, dag: Optional[str] = None, trace: Optional[str] = None,
        progress: str = "plain", capture: bool = True, timeout: Optional[float] = None) -> RunResult:
    """Runs the workflow file ``path`` in a new runtime and waits for it.

    ``nodes`` without ``launcher`` means a virtual cluster of that many nodes
    on this machine. With ``capture=False`` the progress goes to this
    process's stdout (the live view on a terminal with ``progress="auto"``).
    A bad file raises WorkflowError (nothing runs)."""
    args: list[str] = []
    if nodes is not None and launcher is None:
        launcher = "virtual"
    if launcher:
        args += ["--launcher", launcher]
    if nodes is not None:
        args += ["--nodes", str(nodes)]
    if resume:
        args.append("--resume")
    if fail_fast:
        args.append("--fail-fast")
    if dag:
        args += ["--dag", dag]
    if trace:
        args += ["--trace", trace]
    args += ["--progress", progress, os.fspath(path)]
    r = _orch(args, capture, timeout)
    if r.returncode == 2:
        raise WorkflowError((r.stderr or "").strip().removeprefix("dragon-orchestrate: error: ") or
                            f"{os.fspath(path)}: not accepted (exit 2)")
    return RunResult(r.returncode, r.stdout or "", r.stderr or "")


@dataclass
class Workflow:
    """A workflow built in code; ``save`` writes it as a file the loader reads
    (JSON, which is YAML), ``run`` saves and runs it."""
    name: str = ""
    description: str = ""
    env: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, list[Any]] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str, type: str, command: str, **fields: Any) -> "Workflow":
        """Adds a step; ``fields`` are the format's step fields (args, nprocs,
        depends, inputs, outputs, retries, timeout, ...). Returns self."""
        self.steps.append({"name": name, "type": type, "command": command, **fields})
        return self

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"steps": [self._plain(s) for s in self.steps]}
        if self.name:
            d["name"] = self.name
        if self.description:
            d["description"] = self.description
        if self.env:
            d["env"] = {k: str(v) for k, v in self.env.items()}
        if self.parameters:
            d["parameters"] = {k: [str(v) for v in vs] for k, vs in self.parameters.items()}
        return d

    @staticmethod
    def _plain(step: dict[str, Any]) -> dict[str, Any]:
        # Every scalar the loader reads as text (numbers included), lists as lists.
        out: dict[str, Any] = {}
        for k, v in step.items():
            if isinstance(v, (list, tuple)):
                out[k] = [str(x) for x in v]
            elif isinstance(v, dict):
                out[k] = {str(a): str(b) for a, b in v.items()}
            else:
                out[k] = str(v)
        return out

    def save(self, path: str | os.PathLike) -> str:
        """Writes the workflow to ``path`` (use a .yaml name); returns the path."""
        p = os.fspath(path)
        with open(p, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        return p

    def run(self, directory: str | os.PathLike = ".", filename: str = "workflow.yaml", **options: Any) -> RunResult:
        """Saves the workflow as ``directory/filename`` (relative paths in it are
        relative to that folder) and runs it; ``options`` as for ``run()``."""
        os.makedirs(directory, exist_ok=True)
        return run(self.save(os.path.join(directory, filename)), **options)
