"""dragon.workflows: loading, errors and runs from Python, and a workflow built in code."""
import os
import sys

import pytest

from conftest import BUILD, EXAMPLES, ORCH

sys.path.insert(0, str(BUILD / "python"))
os.environ.setdefault("DRAGON_ORCHESTRATE", ORCH)
workflows = pytest.importorskip("dragon.workflows")


def test_load_returns_the_plan():
    plan = workflows.load(EXAMPLES / "pipeline" / "flow.yaml")
    assert plan.name == "word-pipeline" and plan.steps == 4
    assert plan.instances[:2] == ["generate", "mkdata"] or "merge" == plan.instances[-1]
    assert plan.instances[-1] == "merge" and len(plan.instances) == 7


def test_bad_file_raises_with_position(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("steps:\n  - {name: a, type: process, command: x, depends: [nope]}\n")
    with pytest.raises(workflows.WorkflowError, match=r"bad\.yaml:2:\d+: steps\[0\]\.depends: 'nope' is not a step"):
        workflows.load(f)
    with pytest.raises(workflows.WorkflowError):
        workflows.run(f)


def test_workflow_built_in_code_runs(tmp_path):
    (tmp_path / "summod.py").write_text(
        "import glob\ndef total():\n    open('total.txt','w').write(str(sum(int(open(p).read()) for p in glob.glob('out-*.txt'))))\n")
    wf = workflows.Workflow("code", parameters={"n": [1, 2, 3]})
    wf.step("sim", "process", "sh", args=["-c", "echo ${n} > out-${n}.txt"], outputs=["out-${n}.txt"])
    wf.step("sum", "python", "summod:total", depends=["sim"], retries=1)
    r = wf.run(directory=tmp_path, nodes=2)
    assert r.ok, r.output + r.errors
    assert (tmp_path / "total.txt").read_text() == "6"
    assert "4 instances: 4 done" in r.output


def test_ddict_outside_a_step_says_why(monkeypatch):
    monkeypatch.delenv("DRAGON_WORKFLOW_DDICT", raising=False)
    with pytest.raises(RuntimeError, match="DRAGON_WORKFLOW_DDICT is not set"):
        workflows.ddict()


def test_built_workflow_passes_data_through_the_ddict(tmp_path):
    (tmp_path / "kv.py").write_text(
        "from dragon import workflows\n"
        "def put(k, v):\n    d = workflows.ddict(); d[k] = int(v); d.detach()\n"
        "def total(out, *ks):\n    d = workflows.ddict(); open(out, 'w').write(str(sum(d[k] for k in ks))); d.detach()\n")
    wf = workflows.Workflow("kv", parameters={"n": [1, 2, 3]})
    wf.step("put", "python", "kv:put", args=["k${n}", "${n}"], outputs=["ddict:k${n}"])
    wf.step("sum", "python", "kv:total", args=["sum.txt", "k1", "k2", "k3"],
            inputs=["ddict:k1", "ddict:k2", "ddict:k3"], outputs=["sum.txt"])
    r = wf.run(directory=tmp_path)
    assert r.ok, r.output + r.errors
    assert (tmp_path / "sum.txt").read_text() == "6"
