"""Workflows end to end: `dragon-orchestrate run flow.yaml` on one node and
on a 4-node virtual cluster, with real MPICH and Open MPI programs; the
dependencies, retries, timeouts, resume, failures, exit codes, the summary,
the DAG and the trace; every bad-input case (exit 2, nothing started)."""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import textwrap
import time

import pytest

from conftest import EXAMPLES, ORCH

LAUNCHERS = {"one": [], "virtual4": ["--launcher", "virtual", "--nodes", "4"]}
ENV = {k: v for k, v in os.environ.items() if not k.startswith("OMPI_MCA_")}


def run(args, cwd=None, timeout=240):
    return subprocess.run([ORCH, "run", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


def write(tmp_path, text, name="flow.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def trace_events(path):
    return [e for e in json.loads(pathlib.Path(path).read_text())["traceEvents"] if e.get("ph") == "X"]


def trace_spans(path):
    """The instance spans (one per attempt)."""
    return [e for e in trace_events(path) if e.get("cat") != "rank"]


def rank_spans(path):
    """The rank spans, by (instance, attempt): {rank: event}."""
    out = {}
    for e in trace_events(path):
        if e.get("cat") == "rank":
            out.setdefault((e["args"]["instance"], e["args"]["attempt"]), {})[e["args"]["rank"]] = e
    return out


def check_ranks_nest(path, instance, nranks, nodes=None):
    """Every rank of `instance`'s last attempt has a span inside the
    instance's span, on its own lane right below it, with its pid and node."""
    inst = [e for e in trace_spans(path) if e["name"] == instance]
    assert inst, instance
    top = max(inst, key=lambda e: e["args"]["attempt"])
    ranks = rank_spans(path)[(instance, top["args"]["attempt"])]
    assert sorted(ranks) == list(range(nranks))
    pids = set()
    for r, e in ranks.items():
        assert e["name"] == f"{instance} rank {r}"
        assert e["pid"] == top["pid"] and e["tid"] == top["tid"] + 1 + r
        # ts/dur are whole microseconds: 1 us of rounding either side
        assert top["ts"] - 1 <= e["ts"] and e["ts"] + e["dur"] <= top["ts"] + top["dur"] + 1
        assert e["args"]["reaped"] is True and e["args"]["pid"] > 0
        pids.add(e["args"]["pid"])
        if nodes is not None:
            assert e["args"]["node"] in nodes
    assert len(pids) == nranks
    return ranks


def order_of(trace):
    """Each instance's (start, end) in microseconds, from the trace's last attempt."""
    out = {}
    for e in trace:
        out[e["name"]] = (e["ts"], e["ts"] + e["dur"])
    return out


def summary_row(stdout, step):
    for line in stdout.splitlines():
        cols = line.split()
        if cols and cols[0] == step:
            return cols
    raise AssertionError(f"no summary row for {step} in:\n{stdout}")


def have(prog):
    return shutil.which(prog) is not None


def run_id_of(stdout):
    m = re.search(r"\] run    .*\(run (\S+)\)", stdout)
    assert m, stdout
    return m.group(1)


def shm_of(run_id):
    return [e for e in os.listdir("/dev/shm") if run_id in e]


def procs_of_run(run_id):
    """Pids of live processes whose environment says they belong to the run."""
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and f"DRAGON_RUN_ID={run_id}".encode() in env:
            out.append(int(p.name))
    return out


def alive(pid):
    try:
        return (pathlib.Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def nothing_left(run_id, timeout=15.0):
    """No process of the run alive and nothing of it in /dev/shm (waiting a
    little: the last processes may still be on their way out)."""
    deadline = time.monotonic() + timeout
    while True:
        procs, shm = procs_of_run(run_id), shm_of(run_id)
        if not procs and not shm:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} left processes {procs} and /dev/shm entries {shm}")
        time.sleep(0.1)


# ---- the examples -------------------------------------------------------------------------------

@pytest.mark.parametrize("where", LAUNCHERS)
@pytest.mark.skipif(not have("mpicc.mpich"), reason="needs MPICH (scripts/install-deps.sh mpi)")
def test_sim_analysis_example(tmp_path, where):
    d = tmp_path / "sim"
    shutil.copytree(EXAMPLES / "sim_analysis", d)
    r = run([*LAUNCHERS[where], "--trace", str(tmp_path / "t.json"), str(d / "flow.yaml")])
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (d / "out" / "summary.txt").read_text()
    m = re.match(r"slabs 4 cells 8000 total ([0-9.]+) hottest \S+slab-0.txt", summary)
    assert m, summary
    assert abs(float(m.group(1)) - 4000.0) < 1e-3  # heat is conserved: 1000 * 4 ranks
    sim_log = (d / "flow.dragon" / "logs" / "simulate.out").read_text()
    assert "ranks 4 cells 8000" in sim_log
    spans = order_of(trace_spans(tmp_path / "t.json"))
    assert set(spans) == {"build", "prepare", "simulate", *(f"analyze:slab={k}" for k in range(4)), "reduce"}
    for k in range(4):  # every analysis after the simulation, the reduce after every analysis
        assert spans[f"analyze:slab={k}"][0] >= spans["simulate"][1]
        assert spans["reduce"][0] >= spans[f"analyze:slab={k}"][1]
    assert spans["simulate"][0] >= spans["build"][1]
    assert summary_row(r.stdout, "analyze")[1:3] == ["4", "done"]
    # a span per rank of the 4-rank MPICH step, inside its instance's span
    sim = [e for e in trace_spans(tmp_path / "t.json") if e["name"] == "simulate"][0]
    ranks = check_ranks_nest(tmp_path / "t.json", "simulate", 4, nodes=set(sim["args"]["nodes"]))
    assert all(e["args"]["exit_code"] == 0 and e["args"]["signal"] == 0 for e in ranks.values())
    for k in range(4):
        check_ranks_nest(tmp_path / "t.json", f"analyze:slab={k}", 1)


@pytest.mark.parametrize("where", LAUNCHERS)
@pytest.mark.skipif(subprocess.run(["/usr/bin/python3", "-c", "import mpi4py"]).returncode != 0,
                    reason="needs mpi4py (scripts/install-deps.sh mpi)")
def test_sweep_example(tmp_path, where):
    d = tmp_path / "sweep"
    shutil.copytree(EXAMPLES / "sweep", d)
    r = run([*LAUNCHERS[where], str(d / "flow.yaml")])
    assert r.returncode == 0, r.stdout + r.stderr
    rows = (d / "results" / "table.txt").read_text().splitlines()
    assert rows[0] == "intervals ranks pi error"
    assert [row.split()[0] for row in rows[1:]] == ["1000", "10000", "100000", "1000000"]
    for row in rows[1:]:
        n, ranks, pi, err = row.split()
        assert ranks == "2" and abs(float(pi) - 3.141592653589793) < 1e-5
    assert summary_row(r.stdout, "pi")[1:3] == ["4", "done"]


@pytest.mark.parametrize("where", LAUNCHERS)
def test_pipeline_example(tmp_path, where):
    d = tmp_path / "pipe"
    shutil.copytree(EXAMPLES / "pipeline", d)
    r = run([*LAUNCHERS[where], "--progress", "plain", str(d / "flow.yaml")])
    assert r.returncode == 0, r.stdout + r.stderr
    totals = dict(line.split() for line in (d / "data" / "totals.txt").read_text().splitlines())
    assert set(totals) == {"alpha", "beta", "gamma", "delta", "epsilon"}
    assert sum(int(v) for v in totals.values()) == 20000
    assert "7 instances: 7 done" in r.stdout
    # the data went through the run's dictionary, one manager per node, destroyed at the end
    nodes = 4 if where == "virtual4" else 1
    assert f"ddict  the run's dictionary: {nodes} manager" in r.stdout
    assert not (d / "data" / "words.txt").exists() and sorted(p.name for p in (d / "data").iterdir()) == ["totals.txt"]
    nothing_left(run_id_of(r.stdout))


# ---- scheduling, failures, retries, timeouts, resume ----------------------------------------------

def test_independent_branches_finish_after_a_failure(tmp_path):
    f = write(tmp_path, """\
        steps:
          - {name: bad, type: process, command: sh, args: [-c, "echo oops >&2; exit 3"]}
          - {name: after_bad, type: process, command: touch, args: [after_bad], depends: [bad]}
          - {name: later, type: process, command: touch, args: [later], depends: [after_bad]}
          - {name: good, type: process, command: touch, args: [good]}
          - {name: after_good, type: process, command: touch, args: [after_good], depends: [good]}
        """)
    r = run(["--progress", "plain", str(f)])
    assert r.returncode == 1, r.stdout + r.stderr
    assert (tmp_path / "good").exists() and (tmp_path / "after_good").exists()
    assert not (tmp_path / "after_bad").exists() and not (tmp_path / "later").exists()
    assert summary_row(r.stdout, "bad")[1:4] == ["1", "failed", "-"] or summary_row(r.stdout, "bad")[2] == "failed"
    assert summary_row(r.stdout, "bad")[-1] == "3"
    assert summary_row(r.stdout, "later")[2] == "skipped"
    assert "bad failed: rank 0 exited with 3" in r.stdout
    assert (tmp_path / "flow.dragon" / "logs" / "bad.err").read_text() == "oops\n"


def test_fail_fast_cancels_the_rest(tmp_path):
    f = write(tmp_path, """\
        steps:
          - {name: bad, type: process, command: sh, args: [-c, "exit 5"]}
          - {name: slow, type: process, command: sleep, args: ["30"]}
          - {name: after_slow, type: process, command: touch, args: [x], depends: [slow]}
        """)
    r = run(["--fail-fast", str(f)], timeout=60)
    assert r.returncode == 1
    assert summary_row(r.stdout, "after_slow")[2] == "cancelled"
    assert summary_row(r.stdout, "slow")[2] == "failed"  # stopped, not left to finish
    assert not (tmp_path / "x").exists()


def test_retries_until_success(tmp_path):
    # Fails on attempts 1 and 2 (DRAGON_WORKFLOW_ATTEMPT), succeeds on 3.
    f = write(tmp_path, """\
        steps:
          - name: flaky
            type: process
            command: sh
            args: [-c, 'echo "attempt $DRAGON_WORKFLOW_ATTEMPT" >> attempts.txt; test $DRAGON_WORKFLOW_ATTEMPT -ge 3']
            retries: 2
        """)
    r = run(["--progress", "plain", str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "attempts.txt").read_text() == "attempt 1\nattempt 2\nattempt 3\n"
    assert r.stdout.count("retry  flaky") == 2


def test_default_logs_exist_only_when_written_and_hold_the_last_attempt(tmp_path):
    # The default logs are created by their first byte: a quiet instance
    # leaves none; a retried one's log is its last attempt's; ranks share it;
    # a failure with no stderr says so.
    f = write(tmp_path, """\
        steps:
          - {name: quiet, type: process, command: "true"}
          - {name: errs, type: process, command: sh, args: [-c, "echo to-err >&2"]}
          - {name: ranks, type: process, command: sh, args: [-c, 'echo "rank $DRAGON_RANK"'], nprocs: 2}
          - name: flaky
            type: process
            command: sh
            args: [-c, 'echo "attempt $DRAGON_WORKFLOW_ATTEMPT"; test $DRAGON_WORKFLOW_ATTEMPT -ge 2']
            retries: 1
          - {name: silentfail, type: process, command: sh, args: [-c, "exit 3"]}
        """)
    logs = tmp_path / "flow.dragon" / "logs"
    logs.mkdir(parents=True)
    (logs / "quiet.out").write_text("from an earlier run\n")
    r = run([str(f)])
    assert r.returncode == 1, r.stdout + r.stderr
    assert not (logs / "quiet.out").exists() and not (logs / "quiet.err").exists()
    assert not (logs / "errs.out").exists() and (logs / "errs.err").read_text() == "to-err\n"
    assert sorted((logs / "ranks.out").read_text().splitlines()) == ["rank 0", "rank 1"]
    assert (logs / "flaky.out").read_text() == "attempt 2\n"
    assert "silentfail failed: rank 0 exited with 3 (stderr: none written)" in r.stdout, r.stdout


def test_retries_exhausted(tmp_path):
    f = write(tmp_path, """\
        steps:
          - {name: never, type: process, command: sh, args: [-c, "echo x >> n.txt; exit 7"], retries: 1}
        """)
    r = run([str(f)])
    assert r.returncode == 1
    assert (tmp_path / "n.txt").read_text() == "x\nx\n"
    assert summary_row(r.stdout, "never")[-1] == "7"


def test_timeout_stops_the_step_and_counts_as_a_failure(tmp_path):
    f = write(tmp_path, """\
        steps:
          - {name: hang, type: process, command: sleep, args: ["60"], timeout: 1, retries: 1}
          - {name: after, type: process, command: touch, args: [after], depends: [hang]}
        """)
    r = run(["--progress", "plain", "--trace", str(tmp_path / "t.json"), str(f)], timeout=60)
    assert r.returncode == 1
    assert "hang failed: timed out after 1s" in r.stdout
    assert summary_row(r.stdout, "hang")[-1] == "124"
    assert not (tmp_path / "after").exists()
    attempts = [e["args"]["attempt"] for e in trace_spans(tmp_path / "t.json") if e["name"] == "hang"]
    assert attempts == [1, 2]


def test_resume_skips_completed_instances(tmp_path):
    f = write(tmp_path, """\
        parameters: {n: [1, 2, 3]}
        steps:
          - {name: work, type: process, command: sh, args: [-c, 'echo ${n} >> ran.txt; test ! -e fail-${n}']}
          - {name: total, type: process, command: sh, args: [-c, 'echo total >> ran.txt'], depends: [work]}
        """)
    (tmp_path / "fail-2").touch()
    r = run([str(f)])
    assert r.returncode == 1
    assert sorted((tmp_path / "ran.txt").read_text().split()) == ["1", "2", "3"]
    (tmp_path / "fail-2").unlink()
    (tmp_path / "ran.txt").unlink()
    r = run(["--resume", str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "ran.txt").read_text().split() == ["2", "total"]
    assert "2 done earlier" in summary_row(r.stdout, "work") or "done earlier" in r.stdout
    # Everything done: a third resumed run runs nothing.
    (tmp_path / "ran.txt").unlink()
    r = run(["--resume", str(f)])
    assert r.returncode == 0
    assert not (tmp_path / "ran.txt").exists()
    # Without --resume, everything runs again.
    r = run([str(f)])
    assert r.returncode == 0
    assert len((tmp_path / "ran.txt").read_text().split()) == 4


def test_parallel_steps_overlap_on_four_nodes(tmp_path):
    # Four independent steps that each wait until all four have started: they
    # can only finish if the runner runs them at the same time.
    f = write(tmp_path, """\
        parameters: {k: [a, b, c, d]}
        steps:
          - name: meet
            type: process
            command: sh
            args: [-c, 'touch here-${k}; n=0; while [ $(ls here-* | wc -l) -lt 4 ]; do sleep 0.05; n=$((n+1)); [ $n -gt 600 ] && exit 9; done; echo $DRAGON_WORKFLOW_INSTANCE']
        """)
    r = run([*LAUNCHERS["virtual4"], "--trace", str(tmp_path / "t.json"), str(f)], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    nodes = sorted(n for e in trace_spans(tmp_path / "t.json") for n in e["args"]["nodes"])
    assert nodes == [0, 1, 2, 3]  # one per node: the runner spreads them over free cpus


def test_stdout_stderr_files_and_env(tmp_path):
    f = write(tmp_path, """\
        env: {GREETING: hello}
        parameters: {who: [ann, bob]}
        steps:
          - name: say
            type: process
            command: sh
            args: [-c, 'echo "$GREETING $WHO from $DRAGON_WORKFLOW_STEP"; echo err-${who} >&2']
            env: {WHO: "${who}"}
            cwd: sub
            stdout: say-${who}.txt
            stderr: logs/say-${who}.err
            depends: [mk]
          - name: mk
            type: process
            command: mkdir
            args: [-p, sub]
        """)
    r = run([str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "sub" / "say-ann.txt").read_text() == "hello ann from say\n"
    assert (tmp_path / "sub" / "logs" / "say-bob.err").read_text() == "err-bob\n"


def test_python_step_return_codes_and_scripts(tmp_path):
    (tmp_path / "mod.py").write_text("def ok(x):\n    open('ok.txt','w').write(x)\n\ndef bad():\n    return 4\n")
    (tmp_path / "script.py").write_text("import sys\nopen('script.txt','w').write(' '.join(sys.argv[1:]))\n")
    f = write(tmp_path, """\
        steps:
          - {name: ok, type: python, command: "mod:ok", args: [fine]}
          - {name: script, type: python, command: script.py, args: [a, b]}
          - {name: bad, type: python, command: "mod:bad"}
          - {name: raises, type: python, command: "mod:missing"}
        """)
    r = run([str(f)])
    assert r.returncode == 1
    assert (tmp_path / "ok.txt").read_text() == "fine"
    assert (tmp_path / "script.txt").read_text() == "a b"
    assert summary_row(r.stdout, "bad")[-1] == "4"
    assert summary_row(r.stdout, "raises")[-1] == "1"
    assert "AttributeError" in (tmp_path / "flow.dragon" / "logs" / "raises.err").read_text()


# ---- plan, DAG, trace ----------------------------------------------------------------------------

def test_dry_run_and_dag(tmp_path):
    d = tmp_path / "sim"
    shutil.copytree(EXAMPLES / "sim_analysis", d)
    r = run(["--dry-run", "--dag", str(tmp_path / "g.dot"), str(d / "flow.yaml")])
    assert r.returncode == 0, r.stderr
    assert "workflow sim-analysis: 5 steps, 8 instances" in r.stdout
    assert "after: simulate" in r.stdout
    assert not (d / "heat").exists() and not (d / "flow.dragon").exists()  # nothing ran
    dot = (tmp_path / "g.dot").read_text()
    ids = dict(re.findall(r'(n\d+) \[label="([^\\"]+)', dot))
    edges = {(ids[a], ids[b]) for a, b in re.findall(r"(n\d+) -> (n\d+);", dot)}
    assert ("build", "simulate") in edges and ("prepare", "simulate") in edges
    assert {("simulate", f"analyze:slab={k}") for k in range(4)} <= edges
    assert {(f"analyze:slab={k}", "reduce") for k in range(4)} <= edges
    assert len(edges) == 2 + 4 + 4


@pytest.mark.skipif(not have("dot"), reason="needs Graphviz")
def test_dag_svg(tmp_path):
    r = run(["--dry-run", "--dag", str(tmp_path / "g.svg"), str(EXAMPLES / "pipeline" / "flow.yaml")])
    assert r.returncode == 0, r.stderr
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "count:chunk=3" in svg


def test_trace_has_a_span_per_instance(tmp_path):
    f = write(tmp_path, """\
        parameters: {i: [1, 2, 3]}
        steps:
          - {name: a, type: process, command: "true"}
          - {name: b, type: process, command: "true", args: ["${i}"], depends: [a]}
        """)
    r = run(["--trace", str(tmp_path / "t.json"), str(f)])
    assert r.returncode == 0
    spans = trace_spans(tmp_path / "t.json")
    assert sorted(e["name"] for e in spans) == ["a", "b:i=1", "b:i=2", "b:i=3"]
    for e in spans:
        assert e["args"]["exit_code"] == 0 and e["dur"] >= 0
    t = order_of(spans)
    assert all(t[f"b:i={k}"][0] >= t["a"][1] for k in (1, 2, 3))
    for name in t:
        check_ranks_nest(tmp_path / "t.json", name, 1)


def test_trace_rank_spans_of_a_failed_rank(tmp_path):
    # rank 2 of 3 fails: its span says so, the others exited 0; each attempt has its own
    f = write(tmp_path, """\
        steps:
          - name: m
            type: process
            command: sh
            args: [-c, 'test "$DRAGON_RANK" != 2 || exit 7']
            nprocs: 3
            retries: 1
        """)
    r = run(["--trace", str(tmp_path / "t.json"), str(f)])
    assert r.returncode == 1, r.stdout + r.stderr
    by_attempt = rank_spans(tmp_path / "t.json")
    assert sorted(by_attempt) == [("m", 1), ("m", 2)]
    ranks = check_ranks_nest(tmp_path / "t.json", "m", 3)
    assert [ranks[k]["args"]["exit_code"] for k in range(3)] == [0, 0, 7]


# ---- bad input: exit 2, nothing started ----------------------------------------------------------

BAD = {
    "syntax": ("steps:\n  - name: [a\n", r"flow\.yaml:\d+:\d+: YAML:"),
    "unknown_field": ("steps:\n  - {name: a, type: process, command: x, colour: red}\n",
                      r"flow\.yaml:2:42: steps\[0\]\.colour: unknown field"),
    "wrong_type": ("steps:\n  - {name: a, type: process, command: x, nprocs: [1]}\n",
                   r"flow\.yaml:2:50: steps\[0\]\.nprocs: expected a whole number"),
    "cycle": ("steps:\n  - {name: a, type: process, command: x, depends: [b]}\n"
              "  - {name: b, type: process, command: x, depends: [a]}\n",
              r"flow\.yaml:2:\d+: steps\[0\]\.depends: a dependency cycle: a -> b -> a"),
    "missing_dep": ("steps:\n  - {name: a, type: process, command: x, depends: [nope]}\n",
                    r"flow\.yaml:2:\d+: steps\[0\]\.depends: 'nope' is not a step"),
    "unknown_parameter": ("parameters: {n: [1]}\nsteps:\n  - {name: a, type: process, command: x, args: ['${m}']}\n",
                          r"flow\.yaml:3:\d+: steps\[0\]\.args: unknown parameter '\$\{m\}' \(parameters: n\)"),
    "ddict_two_writers": ("steps:\n  - {name: a, type: python, command: m:f, outputs: [ddict:k]}\n"
                          "  - {name: b, type: python, command: m:f, outputs: [ddict:k]}\n",
                          r"flow\.yaml:3:\d+: steps\[1\]\.outputs: 'ddict:k' is written by both 'a' and 'b'"),
    "ddict_no_key": ("steps:\n  - {name: a, type: python, command: m:f, inputs: ['ddict:']}\n",
                     r"flow\.yaml:2:\d+: steps\[0\]\.inputs: 'ddict:' needs a key after it"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_and_starts_nothing(tmp_path, case):
    text, pattern = BAD[case]
    f = write(tmp_path, text)
    r = run([str(f)])
    assert r.returncode == 2, r.stdout + r.stderr
    assert re.search(pattern, r.stderr), r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "flow.dragon").exists()


def test_missing_file_and_misused_flags(tmp_path):
    r = run([str(tmp_path / "none.yaml")])
    assert r.returncode == 2 and "none.yaml: cannot read" in r.stderr
    r = run(["--resume", "true"])
    assert r.returncode == 2 and "are for a workflow file" in r.stderr


# ---- the live view, in a real terminal ------------------------------------------------------------

def tmux_screen(tm):
    return subprocess.run([*tm, "capture-pane", "-p", "-t", "wf"], capture_output=True, text=True).stdout


def wait_screen(tm, pred, timeout=60):
    import time
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux_screen(tm)
        if pred(screen):
            return screen
        time.sleep(0.1)
    raise AssertionError("the terminal never showed what was expected:\n" + screen)


def view_line(screen, step):
    for line in screen.splitlines():
        if re.match(rf"^ . {step} +queued", line):
            return line
    return None


@pytest.mark.skipif(not have("tmux"), reason="needs tmux")
def test_live_view_in_tmux(tmp_path):
    write(tmp_path, """\
        name: live
        parameters: {k: [1, 2, 3]}
        steps:
          - {name: first, type: process, command: "true"}
          - {name: hold, type: process, command: sh, args: [-c, 'while [ ! -e go ]; do sleep 0.05; done'], depends: [first]}
          - {name: last, type: process, command: "true", args: ["${k}"], depends: [hold]}
        """)
    tm = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    env = dict(ENV, TERM="xterm")
    subprocess.run([*tm, "new-session", "-d", "-x", "140", "-y", "40", "-s", "wf",
                    f"cd {tmp_path} && {ORCH} run flow.yaml; echo EXIT=$?; sleep 60"], check=True, env=env)
    try:
        screen = wait_screen(tm, lambda s: (view_line(s, "hold") or "").find("running    1") >= 0)
        assert re.search(r"^live  1/5 done  \d+\.\ds$", screen, re.M), screen
        assert re.search(r"first +queued +0 +running +0 +done +1 +failed +0", view_line(screen, "first")), screen
        assert re.search(r"last +queued +3 +running +0 +done +0 +failed +0", view_line(screen, "last")), screen
        (tmp_path / "go").touch()
        screen = wait_screen(tm, lambda s: "EXIT=" in s)
        assert "EXIT=0" in screen, screen
        # Redrawn in place: one header and one line per step, now all done.
        assert len(re.findall(r"^live  \d/5 done", screen, re.M)) == 1, screen
        assert re.search(r"last +queued +0 +running +0 +done +3 +failed +0", view_line(screen, "last")), screen
        assert "5 instances: 5 done" in screen
    finally:
        subprocess.run([*tm, "kill-server"], capture_output=True)


# ---- Ctrl-C ------------------------------------------------------------------------------------

SPIN_C = r"""
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int rank;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char name[64];
    snprintf(name, sizeof name, "pid-mpi-%d", rank);
    FILE *f = fopen(name, "w");
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    for (;;) { MPI_Barrier(MPI_COMM_WORLD); sleep(1); }
    MPI_Finalize();
    return 0;
}
"""

SPIN_PY = """\
import os, time
from dragon import workflows
d = workflows.ddict()
d["held"] = os.getpid()
open("pid-py", "w").write(str(os.getpid()))
time.sleep(600)
"""


@pytest.mark.skipif(not have("mpicc.mpich"), reason="needs MPICH (scripts/install-deps.sh mpi)")
def test_ctrl_c_ends_everything(tmp_path):
    """SIGINT to `dragon-orchestrate run flow.yaml` while an MPICH step (2
    ranks) and a Python step (holding the run's dictionary) run: exit 130,
    the summary names them interrupted and the rest cancelled, no process of
    the run is left and nothing of it in /dev/shm."""
    (tmp_path / "spin.c").write_text(SPIN_C)
    (tmp_path / "spin_py.py").write_text(SPIN_PY)
    f = write(tmp_path, """\
        steps:
          - {name: build, type: process, command: mpicc.mpich, args: [-o, spin, spin.c], outputs: [spin]}
          - {name: spin, type: mpi, command: ./spin, nprocs: 2, pmi: simple, inputs: [spin]}
          - {name: py, type: python, command: spin_py.py, outputs: ["ddict:held"]}
          - {name: after, type: process, command: "true", depends: [spin, py]}
        """)
    p = subprocess.Popen([ORCH, "run", *LAUNCHERS["virtual4"], "--progress", "plain", str(f)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    pid_files = [tmp_path / "pid-mpi-0", tmp_path / "pid-mpi-1", tmp_path / "pid-py"]
    try:
        deadline = time.monotonic() + 120
        while not all(pf.exists() and pf.read_text().strip() for pf in pid_files):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the steps did not start"
            time.sleep(0.1)
        pids = [int(pf.read_text()) for pf in pid_files]
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, out + err
    assert summary_row(out, "spin")[2] == "interrupted", out
    assert summary_row(out, "py")[2] == "interrupted", out
    assert summary_row(out, "build")[2] == "done", out
    assert summary_row(out, "after")[2] == "cancelled", out
    assert re.search(r"4 instances: 1 done, 0 done earlier, 0 failed, 0 skipped, 1 cancelled, 2 interrupted", out), out
    assert re.search(r"  spin interrupted: stopped: rank 0 (killed by signal|exited with) ", out), out
    nothing_left(run_id_of(out))
    assert not [pid for pid in pids if alive(pid)]


# ---- distributed-dictionary keys ------------------------------------------------------------------

DD_STAGES = """\
import sys
from dragon import workflows


def put(key, value):
    d = workflows.ddict()
    d[key] = value
    d.detach()


def get_to_file(key, path):
    d = workflows.ddict()
    v = d[key]
    d.detach()
    open(path, "w").write(str(v))


def nothing():
    return 0
"""


def test_ddict_keys_order_steps_and_missing_outputs_fail(tmp_path):
    (tmp_path / "dd.py").write_text(DD_STAGES)
    f = write(tmp_path, """\
        parameters: {n: [1, 2]}
        steps:
          - {name: get, type: python, command: "dd:get_to_file", args: ["k-${n}", "got-${n}.txt"], inputs: ["ddict:k-${n}"]}
          - {name: put, type: python, command: "dd:put", args: ["k-${n}", "v${n}"], outputs: ["ddict:k-${n}"]}
          - {name: liar, type: python, command: "dd:nothing", outputs: ["ddict:never"]}
          - {name: reader, type: python, command: "dd:get_to_file", args: [never, x.txt], inputs: ["ddict:never"]}
          - {name: nofile, type: process, command: "true", outputs: [never.txt]}
        """)
    r = run(["--progress", "plain", str(f)])
    assert r.returncode == 1, r.stdout + r.stderr
    # get waited for put (the key is its input): it read the values put wrote
    assert (tmp_path / "got-1.txt").read_text() == "v1" and (tmp_path / "got-2.txt").read_text() == "v2"
    assert summary_row(r.stdout, "get")[1:3] == ["2", "done"]
    # a step that succeeds without writing a declared key or file fails, its readers are skipped
    assert summary_row(r.stdout, "liar")[2] == "failed"
    assert "liar failed: did not write its output ddict:never" in r.stdout
    assert summary_row(r.stdout, "reader")[2] == "skipped"
    assert summary_row(r.stdout, "nofile")[2] == "failed"
    assert f"nofile failed: did not write its output {tmp_path / 'never.txt'}" in r.stdout
    nothing_left(run_id_of(r.stdout))


def test_ddict_keys_resume(tmp_path):
    """--resume: the dictionary lives for one run, so an instance whose
    outputs are keys runs again (and what reads them); a file output that is
    gone makes its instance run again too."""
    (tmp_path / "dd.py").write_text(DD_STAGES)
    f = write(tmp_path, """\
        steps:
          - {name: put, type: python, command: "dd:put", args: [k, v], outputs: ["ddict:k"]}
          - {name: get, type: python, command: "dd:get_to_file", args: [k, got.txt], inputs: ["ddict:k"], outputs: [got.txt]}
          - {name: file, type: process, command: touch, args: [f.txt], outputs: [f.txt]}
          - {name: file2, type: process, command: touch, args: [g.txt], outputs: [g.txt]}
        """)
    r = run([str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "g.txt").unlink()
    r = run(["--resume", str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary_row(r.stdout, "put")[2] == "done"
    assert summary_row(r.stdout, "get")[2] == "done"
    assert summary_row(r.stdout, "file")[2:4] == ["done", "earlier"]
    assert summary_row(r.stdout, "file2")[2] == "done"
    assert (tmp_path / "got.txt").read_text() == "v"


def test_no_ddict_without_keys(tmp_path):
    f = write(tmp_path, "steps:\n  - {name: a, type: process, command: sh, args: [-c, 'test -z \"$DRAGON_WORKFLOW_DDICT\"']}\n")
    r = run(["--progress", "plain", str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "] ddict  " not in r.stdout


def test_output_to_dev_null(tmp_path):
    # a step's stdout/stderr may be /dev/null: nothing to empty, no warning per group
    f = write(tmp_path, """\
        steps:
          - {name: quiet, type: process, command: sh, args: [-c, "echo out; echo err >&2"], stdout: /dev/null, stderr: /dev/null}
        """)
    r = run([str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cannot empty" not in r.stderr, r.stderr
    assert not (tmp_path / "flow.dragon" / "logs" / "quiet.out").exists()
