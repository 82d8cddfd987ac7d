"""dragon-orchestrate run -n N: groups, rank environment, failure, restart, placement output."""
import os
import re
import signal

from conftest import PY, pid_alive, run, wait_gone


def test_ranks_get_their_environment():
    r = run(["run", "-n", "4", "--", "sh", "-c",
             'echo "$DRAGON_RANK $DRAGON_NRANKS $DRAGON_LOCAL_RANK $DRAGON_LOCAL_SIZE $DRAGON_NODE_ID"'])
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.decode().splitlines()) == [f"{i} 4 {i} 4 0" for i in range(4)]


def test_every_rank_has_its_own_puid():
    r = run(["run", "-n", "8", "--", "sh", "-c", "echo $DRAGON_PUID"])
    puids = r.stdout.split()
    assert len(set(puids)) == 8


def test_first_failure_gives_the_exit_code_and_names_the_rank(tmp_path):
    # Rank 2 fails at once; the others would sleep for 5 minutes and must be stopped.
    d = tmp_path
    script = (f'echo $$ > {d}/pid.$DRAGON_RANK; if [ "$DRAGON_RANK" = 2 ]; then '
              f'while [ ! -e {d}/pid.0 ] || [ ! -e {d}/pid.1 ] || [ ! -e {d}/pid.3 ]; do sleep 0.01; done; exit 7; fi; '
              'exec sleep 300')
    r = run(["run", "-n", "4", "--patience", "0.2", "--", "sh", "-c", script], timeout=60)
    assert r.returncode == 7
    assert re.search(rb"rank 2 \(puid \d+\) exited with code 7", r.stderr), r.stderr
    for rank in (0, 1, 3):
        pid = int((tmp_path / f"pid.{rank}").read_text())
        assert wait_gone(pid), f"rank {rank} outlived the failed group"


def test_a_rank_killed_by_a_signal_fails_the_group():
    r = run(["run", "-n", "2", "--", "sh", "-c", '[ "$DRAGON_RANK" = 1 ] && kill -KILL $$; exit 0'])
    assert r.returncode == 128 + 9
    assert b"rank 1" in r.stderr and b"killed by signal 9" in r.stderr


STUBBORN_RANK0 = r"""
import os, signal, sys, time
if os.environ["DRAGON_RANK"] == "0":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(300)
else:
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.01)
    sys.exit(5)
"""


def test_stopping_a_failed_group_escalates_to_sigkill(tmp_path):
    pidfile = tmp_path / "rank0.pid"
    r = run(["run", "-n", "2", "--patience", "0.2", "--", PY, "-c", STUBBORN_RANK0, str(pidfile)], timeout=60)
    assert r.returncode == 5  # the first failure, not rank 0's SIGKILL
    assert b"rank 1" in r.stderr
    assert not pid_alive(int(pidfile.read_text()))


FLAKY = r"""
import os, sys
path = os.path.join(sys.argv[1], "tries." + os.environ["DRAGON_RANK"])
n = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(n))
sys.exit(0 if n >= int(sys.argv[2]) else 3)
"""


def test_restart_replaces_failed_ranks_until_they_succeed(tmp_path):
    r = run(["run", "-n", "2", "--restart", "--max-restarts", "10", "--", PY, "-c", FLAKY, str(tmp_path), "3"])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tries.0").read_text() == "3"
    assert (tmp_path / "tries.1").read_text() == "3"


def test_restarts_run_out_and_the_group_fails(tmp_path):
    r = run(["run", "-n", "1", "--restart", "--max-restarts", "2", "--", PY, "-c", FLAKY, str(tmp_path), "99"])
    assert r.returncode == 3
    assert (tmp_path / "tries.0").read_text() == "3"  # the first try and two restarts


def test_without_restart_a_failure_is_final(tmp_path):
    r = run(["run", "-n", "1", "--", PY, "-c", FLAKY, str(tmp_path), "2"])
    assert r.returncode == 3
    assert (tmp_path / "tries.0").read_text() == "1"


def test_label_prefixes_every_line_with_its_rank():
    r = run(["run", "-n", "3", "--label", "--", "sh", "-c",
             'printf "a\\nb" ; sleep 0.1; printf "c\\n"; echo err >&2'])
    out = r.stdout.decode().splitlines()
    for rank in range(3):
        assert out.count(f"[{rank}] a") == 1 and out.count(f"[{rank}] bc") == 1
    assert sorted(r.stderr.decode().splitlines()) == [f"[{k}] err" for k in range(3)]


def test_stdin_goes_to_rank_0_only():
    r = run(["run", "-n", "3", "--label", "--", "sh", "-c", "wc -c"], input=b"12345")
    lines = sorted(r.stdout.decode().split("\n")[:-1])
    assert lines == ["[0] 5", "[1] 0", "[2] 0"]


def test_dry_run_prints_the_map_and_starts_nothing():
    r = run(["run", "-n", "3", "--dry-run", "--", "no-such-program-anywhere"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["rank", "node", "local", "rank", "cpus"]
    assert [l.split()[:3] for l in lines[1:]] == [["0", "0", "0"], ["1", "0", "1"], ["2", "0", "2"]]


def test_display_map_prints_the_map_then_runs():
    r = run(["run", "-n", "2", "--display-map", "--", "sh", "-c", "echo ran $DRAGON_RANK"])
    assert r.returncode == 0
    out = r.stdout.decode().splitlines()
    assert out[0].split()[0] == "rank" and len(out) == 5
    assert sorted(out[3:]) == ["ran 0", "ran 1"]


def test_bad_group_requests_are_usage_errors():
    r = run(["run", "-n", "2", "--placement", "diagonal", "--", "/bin/true"])
    assert r.returncode == 2
    assert b"unknown placement policy 'diagonal' (valid: block, cyclic, spread)" in r.stderr
    r = run(["run", "-n", "0", "--", "/bin/true"])
    assert r.returncode == 2
    assert b"--nprocs" in r.stderr


def test_a_missing_program_in_a_group_is_127_and_starts_nothing_more():
    r = run(["run", "-n", "5", "--", "no-such-program-xyz"])
    assert r.returncode == 127
    assert r.stderr.decode().count("not found in PATH") == 1


def test_ctrl_c_stops_a_whole_group(tmp_path):
    from conftest import read_line_with_timeout, start
    p = start(["run", "-n", "4", "--", "sh", "-c", f'echo $$ > {tmp_path}/p.$DRAGON_RANK; echo up; exec sleep 300'])
    for _ in range(4):
        read_line_with_timeout(p.stdout)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGINT
    for rank in range(4):
        assert wait_gone(int((tmp_path / f"p.{rank}").read_text()))


def allowed_cpus():
    return sorted(os.sched_getaffinity(0))


def test_binding_is_real_inside_each_rank():
    r = run(["run", "-n", str(len(allowed_cpus())), "--bind", "pu", "--label", "--", PY, "-c",
             "import os; print(sorted(os.sched_getaffinity(0)))"])
    assert r.returncode == 0, r.stderr
    got = {}
    for line in r.stdout.decode().splitlines():
        rank, cpus = line.split(" ", 1)
        got[int(rank.strip("[]"))] = eval(cpus)
    # block placement over pus: rank k alone on the k-th allowed cpu
    assert got == {k: [c] for k, c in enumerate(allowed_cpus())}


def test_unbound_ranks_keep_every_allowed_cpu():
    # --label: without it, two ranks' bytes may interleave within a line.
    r = run(["run", "-n", "2", "--label", "--", PY, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"])
    assert sorted(r.stdout.decode().splitlines()) == [f"[{k}] {allowed_cpus()}" for k in range(2)]


def test_oversubscription_warns_or_is_refused():
    n = str(len(allowed_cpus()) + 1)
    r = run(["run", "-n", n, "--bind", "pu", "--", "/bin/true"])
    assert r.returncode == 0
    assert b"warning: oversubscribed" in r.stderr
    r = run(["run", "-n", n, "--bind", "pu", "--no-oversubscribe", "--", "/bin/true"])
    assert r.returncode == 2
    assert f"placing {n} ranks".encode() in r.stderr


SYNTH = {"DRAGON_TOPOLOGY": "synthetic:pack:2 numa:2 core:4 pu:2"}


def test_dry_run_on_a_synthetic_topology_shows_exact_cpus():
    r = run(["run", "-n", "4", "--bind", "core", "--cpus-per-proc", "2", "--placement", "cyclic", "--dry-run",
             "--", "x"], env=SYNTH)
    assert r.returncode == 0, r.stderr
    rows = [l.split() for l in r.stdout.decode().splitlines()[1:]]
    # cores 0-7 on socket 0 (pus 0-15), 8-15 on socket 1 (pus 16-31); cyclic alternates sockets
    assert rows == [["0", "0", "0", "0-3"], ["1", "0", "1", "16-19"], ["2", "0", "2", "4-7"], ["3", "0", "3", "20-23"]]


def test_spread_over_numa_domains_on_a_synthetic_topology():
    r = run(["run", "-n", "4", "--bind", "numa", "--placement", "spread", "--dry-run", "--", "x"], env=SYNTH)
    rows = [l.split()[3] for l in r.stdout.decode().splitlines()[1:]]
    assert sorted(rows) == ["0-7", "16-23", "24-31", "8-15"]


def test_bad_binding_and_topology_are_named():
    r = run(["run", "--bind", "sideways", "--", "/bin/true"])
    assert r.returncode == 2 and b"unknown binding 'sideways'" in r.stderr
    r = run(["run", "--", "/bin/true"], env={"DRAGON_TOPOLOGY": "pack:2"})
    assert r.returncode == 2 and b"DRAGON_TOPOLOGY: bad topology 'pack:2'" in r.stderr


def test_several_programs_in_one_group_number_their_ranks_in_order():
    r = run(["run", "--label", "-n", "2", "--", "sh", "-c", "echo a $DRAGON_RANK/$DRAGON_NRANKS",
             ":", "-n", "3", "sh", "-c", "echo b $DRAGON_RANK/$DRAGON_NRANKS", ":", "sh", "-c", "echo c $DRAGON_RANK"])
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.decode().splitlines()) == [
        "[0] a 0/6", "[1] a 1/6", "[2] b 2/6", "[3] b 3/6", "[4] b 4/6", "[5] c 5"]


def test_bad_program_lists_are_usage_errors():
    for args, why in [([":", "true"], b"':' with no program before it"),
                      (["true", ":"], b"':' with no program after it"),
                      (["true", ":", "-x", "true"], b"program 2: unknown option '-x'"),
                      (["true", ":", "-n", "zero", "true"], b"program 2: -n needs a count from 1 to 1000000, not 'zero'")]:
        r = run(["run", "--", *args])
        assert r.returncode == 2 and why in r.stderr, (args, r.stderr)


def test_output_error_and_input_files_per_rank(tmp_path):
    for rank in range(3):
        (tmp_path / f"in.{rank}").write_text(f"input of {rank}\n")
    r = run(["run", "-n", "3", "--input", "in.%r", "--output", str(tmp_path / "out.%r"), "--error", "err.%2r", "--",
             "sh", "-c", "cat; echo oops >&2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"" and b"oops" not in r.stderr
    for rank in range(3):
        assert (tmp_path / f"out.{rank}").read_text() == f"input of {rank}\n"
        assert (tmp_path / f"err.{rank:02}").read_text() == "oops\n"


def test_stdout_and_stderr_to_one_shared_file(tmp_path):
    r = run(["run", "-n", "4", "--output", "all.log", "--error", "all.log", "--", "sh", "-c",
             "echo out $DRAGON_RANK; echo err $DRAGON_RANK >&2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = sorted((tmp_path / "all.log").read_text().splitlines())
    assert lines == sorted([f"out {i}" for i in range(4)] + [f"err {i}" for i in range(4)])


def test_an_output_file_that_cannot_be_opened_fails_the_start(tmp_path):
    r = run(["run", "--output", str(tmp_path / "missing" / "out.%r"), "--", "true"])
    assert r.returncode == 126
    assert f"cannot open stdout file '{tmp_path}/missing/out.0'".encode() in r.stderr, r.stderr
