"""Jupyter in the runtime (docs/jupyter.md): real notebooks executed by
nbclient with the "Python 3 (Dragon)" kernel, kernel interrupt, shutdown and
restart through jupyter_client, and dragon-jupyter's server through its
REST API and websocket, stopped with SIGINT."""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import BUILD, ORCH, PY, PYPATH, env_for_scripts, no_residue_of, pid_alive, wait_gone

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_server")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "examples", "**", "*.ipynb"), recursive=True))
TWO = ["--launcher", "virtual", "--nodes", "2"]

# Runs a notebook with nbclient and the Dragon kernel (its spec written to
# a directory of its own), then a last cell that says which runtime the
# kernel was in and its pid; writes the executed notebook.
RUNNER = r'''
import json, os, sys
import nbformat
from nbclient import NotebookClient
from dragon import jupyter
src, dst, spec = sys.argv[1:4]
jupyter.write_spec(os.path.join(spec, "kernels"))
os.environ["JUPYTER_PATH"] = spec
nb = nbformat.read(src, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(
    "import dragon, os, json\n"
    "print('RUNINFO ' + json.dumps({'run': dragon.current_runtime().run_id, 'pid': os.getpid()}))"))
NotebookClient(nb, kernel_name="dragon", timeout=600, resources={"metadata": {"path": os.path.dirname(src)}}).execute()
nbformat.write(nb, dst)
'''


def outputs(nb_path):
    """[(cell source, [(stream or output type, text)])] of the code cells."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    cells = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        outs = []
        for o in c.outputs:
            if o.output_type == "stream":
                outs.append((o.name, o.text))
            elif o.output_type == "error":
                outs.append(("error", f"{o.ename}: {o.evalue}"))
            else:
                outs.append((o.output_type, json.dumps(o.get("data", {}))))
        cells.append((c.source, outs))
    return cells


def run_notebook(tmp_path, nb, under=None, extra_env=None):
    runner = tmp_path / "run_nb.py"
    runner.write_text(RUNNER)
    dst = tmp_path / ("executed-" + os.path.basename(nb))
    cmd = [PY, str(runner), nb, str(dst), str(tmp_path / "spec")]
    if under is not None:
        cmd = [ORCH, "run", *under, "--", *cmd]
    p = subprocess.run(cmd, env=env_for_scripts(extra_env), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    cells = outputs(dst)
    errors = [o for _, outs in cells for o in outs if o[0] == "error"]
    assert errors == [], errors
    info = json.loads(re.search(r"RUNINFO (\{.*\})", "".join(t for _, t in cells[-1][1])).group(1))
    return cells, info


def text_of(cells, needle):
    """The stdout of the code cell whose source contains ``needle``."""
    for src, outs in cells:
        if needle in src:
            return "".join(t for name, t in outs if name == "stdout")
    raise AssertionError(f"no cell with {needle!r}")


def check_virtual_cluster(cells):
    first = text_of(cells, "System().nnodes")
    assert "runtime of 2 node(s)" in first
    group = text_of(cells, "ProcessGroup()")
    members = re.findall(r"member (\d) on node (\d) \(pid (\d+)\)", group)
    # Every member's output is in the cell that started it, and before what
    # the cell printed after join().
    assert sorted(int(m) for m, _, _ in members) == [0, 1, 2, 3]
    assert {n for _, n, _ in members} == {"0", "1"}
    assert group.rstrip().endswith("exit codes: [0, 0, 0, 0]")
    assert "pool workers on nodes: [0, 0, 1, 1]" in text_of(cells, "mp.Pool")
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49]" in text_of(cells, "mp.Pool")
    procs = text_of(cells, "mp.Process(target=child")
    assert sorted(re.findall(r"an mp.Process on node (\d)", procs)) == ["0", "1"]
    assert "mp.Process nodes: ['0', '1'] exit codes: [0, 0]" in procs
    return [int(p) for _, _, p in members]


@pytest.mark.system
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[os.path.relpath(n, ROOT) for n in NOTEBOOKS])
def test_notebook_in_a_two_node_runtime(tmp_path, nb):
    """nbclient under dragon-orchestrate run: the kernel joins that runtime."""
    cells, info = run_notebook(tmp_path, nb, under=TWO)
    pids = check_virtual_cluster(cells) if nb.endswith("virtual_cluster.ipynb") else []
    assert wait_gone(pids + [info["pid"]])
    assert no_residue_of(info["run"]) == []


@pytest.mark.system
def test_notebook_with_a_standalone_kernel_starts_its_own_runtime(tmp_path):
    """No runtime around: the kernel starts an embedded one (2 virtual nodes
    from $DRAGON_EMBEDDED_ARGS) and stops it when it shuts down."""
    nb = os.path.join(ROOT, "examples", "cookbook", "notebook", "virtual_cluster.ipynb")
    cells, info = run_notebook(tmp_path, nb, extra_env={"DRAGON_EMBEDDED_ARGS": " ".join(TWO)})
    pids = check_virtual_cluster(cells)
    assert wait_gone(pids + [info["pid"]])
    assert no_residue_of(info["run"]) == []


def test_kernelspec_install_and_cli(tmp_path):
    """install --prefix writes a spec jupyter_client finds; bad commands are named."""
    env = env_for_scripts({"JUPYTER_PATH": str(tmp_path / "share" / "jupyter")})
    p = subprocess.run([PY, "-m", "dragon.jupyter", "install", "--prefix", str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / "dragon" / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (Dragon)"
    assert spec["argv"][:3] == [PY, "-m", "dragon.jupyter.kernel"] and spec["interrupt_mode"] == "signal"
    assert PYPATH in spec["env"]["PYTHONPATH"].split(os.pathsep)
    found = subprocess.run([PY, "-c", "from jupyter_client.kernelspec import KernelSpecManager as M; "
                            "print(M().get_kernel_spec('dragon').display_name)"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert found.stdout.strip() == "Python 3 (Dragon)", found.stderr
    bad = subprocess.run([PY, "-m", "dragon.jupyter", "instal"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown command 'instal'" in bad.stderr


# ---- interrupt, shutdown, restart (jupyter_client in this process) ------------------


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A Dragon kernel with its own embedded runtime of 2 virtual nodes."""
    from jupyter_client.manager import KernelManager

    sys.path.insert(0, PYPATH)
    try:
        from dragon import jupyter
    finally:
        sys.path.remove(PYPATH)
    spec = tmp_path / "spec"
    jupyter.write_spec(str(spec / "kernels"))
    for k, v in env_for_scripts({"JUPYTER_PATH": str(spec), "DRAGON_EMBEDDED_ARGS": " ".join(TWO)}).items():
        monkeypatch.setenv(k, v)
    for k in ("DRAGON_AGENT_SOCKET", "DRAGON_PUID"):
        monkeypatch.delenv(k, raising=False)
    km = KernelManager(kernel_name="dragon")
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    yield km, kc
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=True)


def execute(kc, code, timeout=300, on_output=None):
    """Runs ``code``; returns (reply content, stdout text)."""
    msg_id = kc.execute(code)
    out = []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
            if on_output:
                on_output("".join(out))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=max(1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], "".join(out)


RUNINFO = "import dragon, os, json; print('RUNINFO ' + json.dumps({'run': dragon.current_runtime().run_id, 'pid': os.getpid()}))"


def runinfo(kc):
    _, out = execute(kc, RUNINFO)
    return json.loads(re.search(r"RUNINFO (\{.*\})", out).group(1))


@pytest.mark.system
def test_interrupt_stops_what_the_cell_started(kernel):
    km, kc = kernel
    info = runinfo(kc)
    code = """
import os, time
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate

def sleeper():
    print(f"sleeping pid {os.getpid()} node {os.environ['DRAGON_NODE_ID']}", flush=True)
    time.sleep(600)

pg = ProcessGroup()
pg.add_process(4, ProcessTemplate(sleeper))
pg.start()
pg.join()          # no `with`: the kernel, not the cell, must stop the group
"""
    seen = {}

    def on_output(text):
        pids = re.findall(r"sleeping pid (\d+) node (\d)", text)
        if len(pids) == 4 and "sent" not in seen:
            seen["pids"] = pids
            seen["sent"] = True
            km.interrupt_kernel()

    reply, out = execute(kc, code, on_output=on_output)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    pids = [int(p) for p, _ in seen["pids"]]
    assert {n for _, n in seen["pids"]} == {"0", "1"}
    assert wait_gone(pids), "the interrupted cell's members still run"
    assert pid_alive(info["pid"])  # the kernel lives on, and works
    reply, out = execute(kc, "print(sorted(pg.exit_status)[0][1] != 0, len(pg.exit_status))")
    assert reply["status"] == "ok" and out.strip() == "True 4"
    km.shutdown_kernel(now=False)
    assert wait_gone([info["pid"]])
    assert no_residue_of(info["run"]) == []


START_BACKGROUND = """
import os, time, multiprocessing as mp
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate
mp.set_start_method("dragon", force=True)

def sleeper(q=None):
    if q is not None:
        q.put(os.getpid())
    time.sleep(600)

pg = ProcessGroup()                      # left running
pg.add_process(2, ProcessTemplate(sleeper))
pg.start()
q = mp.Queue()
child = mp.Process(target=sleeper, args=(q,))   # non-daemon: would outlive a plain script's owner
child.start()
def pid_after(_):
    time.sleep(0.2)
    return os.getpid()

pool = mp.Pool(2)                        # its workers, left running
pool_pids = sorted(set(pool.map(pid_after, range(8), chunksize=1)))
print("PIDS", [m["pid"] for m in pg._group.members] + [q.get(timeout=120)] + pool_pids)
"""


def pids_of(out):
    return [int(p) for p in re.findall(r"\d+", re.search(r"PIDS \[(.*)\]", out).group(1))]


@pytest.mark.system
def test_shutdown_leaves_nothing(kernel):
    km, kc = kernel
    info = runinfo(kc)
    reply, out = execute(kc, START_BACKGROUND)
    assert reply["status"] == "ok", reply
    pids = pids_of(out)
    assert len(pids) >= 4 and all(pid_alive(p) for p in pids)
    km.shutdown_kernel(now=False)
    assert wait_gone(pids + [info["pid"]], timeout=60)
    assert no_residue_of(info["run"]) == []


@pytest.mark.system
def test_restart_leaves_nothing_of_the_old_kernel(kernel):
    km, kc = kernel
    info = runinfo(kc)
    reply, out = execute(kc, START_BACKGROUND)
    assert reply["status"] == "ok", reply
    pids = pids_of(out)
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=120)
    assert wait_gone(pids + [info["pid"]], timeout=60)
    assert no_residue_of(info["run"]) == []
    new = runinfo(kc)  # the new kernel has a runtime of its own
    assert new["run"] != info["run"] and pid_alive(new["pid"])


# ---- the server ---------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.system
def test_dragon_jupyter_server(tmp_path):
    """dragon-jupyter on 2 virtual nodes: prints its URL, answers its REST
    API on 127.0.0.1, runs a kernel of the runtime through the API and a
    websocket, and stops on SIGINT leaving nothing behind."""
    import urllib.request

    port = free_port()
    cmd = [str(BUILD / "bin" / "dragon-jupyter"), *TWO, "--", f"--port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.root_dir={tmp_path}"]
    env = env_for_scripts({"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")})
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r"dragon-jupyter: (http://127\.0\.0\.1:(\d+)/\S*\?token=(\w+))", line)
            if m:
                url, token = m.group(1), m.group(3)
                assert int(m.group(2)) == port
        assert url, f"no URL printed; stderr:\n{proc.stderr.read() if proc.poll() is not None else ''}"
        base = f"http://127.0.0.1:{port}"
        try:
            import nbclassic  # noqa: F401

            with urllib.request.urlopen(url, timeout=60) as r:  # the printed URL opens the notebook's pages
                assert r.status == 200 and b"<title>Home" in r.read()
        except ImportError:
            pass

        def api(method, path, body=None):
            req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read() or b"null")

        specs = api("GET", "/api/kernelspecs")
        assert specs["default"] == "dragon"
        assert specs["kernelspecs"]["dragon"]["spec"]["display_name"] == "Python 3 (Dragon)"
        with pytest.raises(urllib.error.HTTPError):  # the token is required
            urllib.request.urlopen(base + "/api/kernels", timeout=30)
        k = api("POST", "/api/kernels", {"name": "dragon"})
        out = run_over_websocket(port, token, k["id"], """
import os, json, dragon
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate
def where():
    import os
    print("member on node", os.environ["DRAGON_NODE_ID"])
with ProcessGroup() as pg:
    pg.add_process(4, ProcessTemplate(where))
    pg.start()
    pg.join()
print("RUNINFO " + json.dumps({"run": dragon.current_runtime().run_id, "pid": os.getpid()}))
""")
        assert sorted(re.findall(r"member on node (\d)", out)) == ["0", "0", "1", "1"], out
        info = json.loads(re.search(r"RUNINFO (\{.*\})", out).group(1))
        assert [x["id"] for x in api("GET", "/api/kernels")] == [k["id"]]
        # A kernel interrupt through the server's API stops the cell's group.
        seen = {}

        def on_output(text):
            pids = re.findall(r"sleeping pid (\d+)", text)
            if len(pids) == 2 and not seen:
                seen["pids"] = [int(p) for p in pids]
                api("POST", f"/api/kernels/{k['id']}/interrupt")

        status, out = run_over_websocket(port, token, k["id"], """
import time
def sleeper():
    import os, time
    print("sleeping pid", os.getpid(), flush=True)
    time.sleep(600)
pg2 = ProcessGroup()
pg2.add_process(2, ProcessTemplate(sleeper))
pg2.start()
pg2.join()
""", on_output=on_output, expect="error")
        assert "KeyboardInterrupt" in out, out
        assert wait_gone(seen["pids"], timeout=60), out
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(timeout=120)
        err = proc.stderr.read()
        assert code == 0, err
        assert wait_gone([info["pid"]], timeout=60), err
        assert no_residue_of(info["run"]) == [], err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_over_websocket(port, token, kernel_id, code, timeout=300, on_output=None, expect="ok"):
    """Sends an execute_request on the kernel's websocket; returns its stdout
    (and the reply's status when ``expect`` is not "ok")."""
    import asyncio

    from jupyter_client.jsonutil import json_default
    from jupyter_client.session import Session
    from tornado.websocket import websocket_connect

    async def go():
        ws = await websocket_connect(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}")
        msg = Session().msg("execute_request", {"code": code, "silent": False, "store_history": False,
                                                "user_expressions": {}, "allow_stdin": False})
        msg["channel"] = "shell"
        await ws.write_message(json.dumps(msg, default=json_default))
        out, status, idle = [], None, False
        while status is None or not idle:
            raw = await asyncio.wait_for(ws.read_message(), timeout)
            assert raw is not None, "the websocket closed"
            m = json.loads(raw)
            if m.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                continue
            if m["msg_type"] == "stream":
                out.append(m["content"]["text"])
                if on_output:
                    on_output("".join(out))
            elif m["msg_type"] == "execute_reply":
                status = m["content"]["status"]
            elif m["msg_type"] == "error":
                out.append(f"ERROR {m['content']['ename']}: {m['content']['evalue']}")
            elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                idle = True
        ws.close()
        assert status == expect, "".join(out)
        return "".join(out) if expect == "ok" else (status, "".join(out))

    return asyncio.run(go())
