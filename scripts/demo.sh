#!/usr/bin/env bash
# The main job, narrated: what dragon-orchestrate does on one node and on a
# virtual cluster of several agents on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ORCH=build/bin/dragon-orchestrate
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

step "Run a program as the head of a runtime; its exit code is ours" \
     "$ORCH run -- sh -c 'echo hello from \$(hostname), puid \$DRAGON_PUID; exit 3'"
set +e
$ORCH run -- sh -c 'echo hello from $(hostname), puid $DRAGON_PUID; exit 3'
echo "exit code: $?"
set -e

step "stdin is forwarded to the head, stdout and stderr come back unmangled" \
     "seq 1 100000 | $ORCH run -- sh -c 'wc -l; echo to-stderr >&2'"
seq 1 100000 | $ORCH run -- sh -c 'wc -l; echo to-stderr >&2'

step "The head talks to its node agent over the local socket" \
     "$ORCH run -- build/bin/client_probe"
$ORCH run -- build/bin/client_probe

step "A group of 8 ranks over a virtual cluster of 4 nodes (one agent per loopback address), round robin" \
     "$ORCH run --launcher virtual --nodes 4 -n 8 --placement cyclic --label -- sh -c 'echo rank \$DRAGON_RANK on node \$DRAGON_NODE_ID'"
$ORCH run --launcher virtual --nodes 4 -n 8 --placement cyclic --label -- sh -c 'echo rank $DRAGON_RANK on node $DRAGON_NODE_ID' | sort -t']' -k1.2n

step "A C++ program starts its own ProcessGroup (two templates, a pipe back) across nodes" \
     "$ORCH run --launcher virtual --nodes 2 -- build/bin/group_probe basic"
$ORCH run --launcher virtual --nodes 2 -- build/bin/group_probe basic

step "Channels across nodes: 16 members on 4 nodes each send 20 messages to every other's inbox (exactly once, in order)" \
     "$ORCH run --launcher virtual --nodes 4 -- build/bin/chan_probe mesh 16 20"
$ORCH run --launcher virtual --nodes 4 -- build/bin/chan_probe mesh 16 20 | grep "^mesh"

step "Python: a ProcessGroup of callables and an executable, results through a channel, an exception reported back; embedded runtime, then 2 virtual nodes" \
     "PYTHONPATH=build/python /usr/bin/python3 examples/python/process_group.py"
PYTHONPATH=build/python /usr/bin/python3 examples/python/process_group.py
$ORCH run --launcher virtual --nodes 2 -- env PYTHONPATH=build/python /usr/bin/python3 examples/python/process_group.py | grep "node 1" | head -3

step "Ctrl-C: SIGINT, then SIGTERM, then SIGKILL after --patience (here a head that ignores SIGINT)" \
     "$ORCH --log-level info run --patience 0.5 -- python3 -c '<ignore SIGINT, sleep>'  # then SIGINT"
before=$(ls /dev/shm | grep '^dragon-' | sort || true)
set +e
$ORCH --log-level info run --patience 0.5 -- /usr/bin/python3 -c \
  'import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); print("head: ignoring SIGINT", flush=True); time.sleep(60)' &
pid=$!
sleep 0.5
kill -INT $pid
wait $pid
echo "exit code: $? (128 + SIGTERM)"
set -e
after=$(ls /dev/shm | grep '^dragon-' | sort || true)
echo "new entries left in /dev/shm: $(comm -13 <(echo "$before") <(echo "$after") | grep -c . || true)"

step "Start-up + teardown against mpiexec.hydra (median of 20)" "bench/startup.py --runs 20"
/usr/bin/python3 bench/startup.py --runs 20
