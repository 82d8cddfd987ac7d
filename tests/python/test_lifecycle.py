"""The embedded runtime's life: started on first use, gone at interpreter
exit, on Ctrl-C (SIGINT to the script) and when the script is SIGKILLed;
the same script joins the runtime of dragon-orchestrate instead."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import no_residue_of, pid_alive, wait_gone

SLEEPERS = """
import json, os, sys, time
import dragon
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate

def nap():
    time.sleep(120)

pg = ProcessGroup()
pg.add_process(2, ProcessTemplate("/bin/sleep", args=("120",)))
pg.add_process(2, ProcessTemplate(nap))
pg.start()
import dragon._runtime as r
info = {"run": dragon.current_runtime().run_id, "pids": [m["pid"] for m in pg.members],
        "agent": dragon.current_runtime().agent_pid,
        "serve": r._embedded.proc.pid if r._embedded else 0}
print(json.dumps(info), flush=True)
mode = sys.argv[1]
if mode == "exit":
    sys.exit(0)
pg.join()   # until a signal
"""


def started(s, mode):
    p = s.start(mode)
    line = p.stdout.readline()
    assert line.startswith("{"), (line, p.stderr.read() if p.poll() is not None else "")
    return p, json.loads(line)


def assert_all_gone(info):
    pids = info["pids"] + [info["agent"]] + ([info["serve"]] if info["serve"] else [])
    assert wait_gone(pids, 30), [p for p in pids if pid_alive(p)]
    assert no_residue_of(info["run"]) == []


def test_interpreter_exit_tears_down(script):
    s = script(SLEEPERS)
    p, info = started(s, "exit")
    assert p.wait(60) == 0
    assert info["serve"] > 0
    assert_all_gone(info)


def test_ctrl_c_tears_down(script):
    s = script(SLEEPERS)
    p, info = started(s, "join")
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground script
    code = p.wait(60)
    err = p.stderr.read()
    assert code != 0 and "KeyboardInterrupt" in err
    assert_all_gone(info)


def test_sigkill_of_the_script_tears_down(script):
    s = script(SLEEPERS)
    p, info = started(s, "join")
    p.kill()
    p.wait(30)
    assert_all_gone(info)  # the runtime saw its stdin close


def test_bad_orchestrate_path_is_a_clear_error(script):
    s = script("""
    import dragon
    try:
        dragon.current_runtime()
    except dragon.DragonError as e:
        print("ERR", e)
    """)
    p = s.run(env={"DRAGON_ORCHESTRATE": "/bin/false"})
    assert "did not start" in p.stdout and "exited with code 1" in p.stdout


SAME = """
import json, os, socket
import dragon
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate

def where():
    print("member on node", os.environ["DRAGON_NODE_ID"])

with ProcessGroup() as pg:
    pg.add_process(8, ProcessTemplate(where))
    pg.add_process(2, ProcessTemplate("/bin/sh", args=("-c", "exit 0")))
    pg.start()
    pg.join()
    nodes = sorted({m["node"] for m in pg.members})
    codes = [c for _, c in pg.exit_status]
print(json.dumps({"nodes": nodes, "codes": codes, "under": "DRAGON_AGENT_SOCKET" in os.environ}))
"""


def test_same_script_embedded(script):
    p = script(SAME).run()
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"nodes": [0], "codes": [0] * 10, "under": False}
    assert p.stdout.count("member on node 0") == 8


@pytest.mark.system
def test_same_script_under_dragon_orchestrate_on_two_nodes(script):
    # Unbuffered members write a line in pieces: their lines must not mix.
    p = script(SAME).run(under=["--launcher", "virtual", "--nodes", "2"], timeout=180,
                         env={"PYTHONUNBUFFERED": "1"})
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"nodes": [0, 1], "codes": [0] * 10, "under": True}
    assert p.stdout.count("member on node 0") == 4 and p.stdout.count("member on node 1") == 4


@pytest.mark.system
def test_embedded_virtual_cluster(script):
    p = script(SAME).run(env={"DRAGON_EMBEDDED_ARGS": "--launcher virtual --nodes 2"}, timeout=180)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"nodes": [0, 1], "codes": [0] * 10, "under": False}


def test_installed_package_runs_from_its_prefix(script, tmp_path):
    """`cmake --install` puts the package and the binaries under a prefix;
    the package finds dragon-orchestrate there, without the build tree."""
    from conftest import BUILD, PY
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(prefix)], check=True, capture_output=True,
                   timeout=120)
    site = prefix / "lib" / "python3" / "dist-packages"
    assert (site / "dragon" / "native" / "process_group.py").exists()
    assert not (site / "dragon" / "_build_paths.py").exists()
    s = script(SAME)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAGON_")}
    env["PYTHONPATH"] = str(site)
    env["PATH"] = "/usr/bin:/bin"
    p = subprocess.run([PY, str(s.path)], cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["codes"] == [0] * 10
    assert str(prefix) in subprocess.run([PY, "-c", "import dragon._runtime as r; print(r.orchestrate_path())"],
                                         env=env, capture_output=True, text=True, cwd="/").stdout
