#!/usr/bin/env bash
# A real 4-node Slurm cluster on this machine, for tests: one slurmctld and
# four slurmd (n1..n4, all this host, ports 17001-17004), everything in a
# scratch folder. docs/slurm.md says what each setting is for.
#
#   scripts/slurm-cluster.sh up       start munged (if needed), slurmctld, 4 slurmd; wait for 4 idle nodes
#   scripts/slurm-cluster.sh down     stop what `up` started, remove the scratch folder
#   scripts/slurm-cluster.sh status   sinfo of the cluster (exit 1 if it is not up)
#   scripts/slurm-cluster.sh env      the lines to eval so srun/salloc/sinfo find it:
#                                       eval "$(scripts/slurm-cluster.sh env)"
#
# Environment: DRAGON_SLURM_DIR (scratch folder, default /tmp/dragon-slurm),
# DRAGON_SLURM_CPUS (CPUs per node, default 2), DRAGON_SLURM_CTLD_PORT
# (default 6817), DRAGON_SLURM_NODE_PORT (first slurmd port, default 17001).
# Runs as root; installs only through scripts/install-deps.sh slurm.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${DRAGON_SLURM_DIR:-/tmp/dragon-slurm}
cpus=${DRAGON_SLURM_CPUS:-2}
ctld_port=${DRAGON_SLURM_CTLD_PORT:-6817}
node_port=${DRAGON_SLURM_NODE_PORT:-17001}
nodes=(n1 n2 n3 n4)
conf=$dir/slurm.conf
marker=$dir/.dragon-slurm   # `down` removes only a folder that `up` made
up_timeout=30               # seconds for 4 idle nodes
down_timeout=15             # seconds for the daemons to exit before SIGKILL

die() { echo "slurm-cluster: $*" >&2; exit 1; }
say() { echo "slurm-cluster: $*"; }

case "$dir" in
  /*) ;;
  *) die "DRAGON_SLURM_DIR must be an absolute path, not '$dir'" ;;
esac
[ "$dir" != / ] || die "DRAGON_SLURM_DIR must not be /"

# The pid in a pid file if that process is alive and runs `comm`; empty otherwise
# (a stale file, or a pid reused by something else, is never signalled).
live_pid() {
  local file=$1 comm=$2 pid
  [ -f "$file" ] || return 0
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 0
  # A zombie has exited already (state Z, the field after "(comm)").
  [ "$(sed 's/.*) //; s/ .*//' "/proc/$pid/stat" 2>/dev/null)" = Z ] || echo "$pid"
  return 0
}

# slurmstepd processes of this cluster (they carry its SLURM_CONF), by pid.
stepd_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
    { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$conf" && echo "${p#/proc/}"
  done
  return 0
}

daemon_pids() {
  live_pid "$dir/run/slurmctld.pid" slurmctld
  for n in "${nodes[@]}"; do live_pid "$dir/run/slurmd-$n.pid" slurmd; done
}

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

# Waits up to $1 seconds for every pid in the rest to exit; prints those left.
wait_exit() {
  local bound=$1; shift
  local deadline=$((SECONDS + bound)) left
  while :; do
    left=()
    for p in "$@"; do
      [ -d "/proc/$p" ] && [ "$(sed 's/.*) //; s/ .*//' "/proc/$p/stat" 2>/dev/null)" != Z ] && left+=("$p")
    done
    [ ${#left[@]} -eq 0 ] && return 0
    [ $SECONDS -ge $deadline ] && { echo "${left[*]}"; return 0; }
    sleep 0.2
  done
}

tail_logs() {
  local f
  for f in "$dir"/log/*.log; do
    [ -f "$f" ] || continue
    echo "---- $f (last 15 lines)" >&2
    tail -n 15 "$f" >&2
  done
}

write_conf() {
  local host last_port
  host=$(hostname -s)
  last_port=$((node_port + ${#nodes[@]} - 1))
  cat >"$conf" <<EOF
# Written by scripts/slurm-cluster.sh: a 4-node test cluster on $host (docs/slurm.md).
ClusterName=dragon
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmdLogFile=$dir/log/slurmd-%n.log
TmpFS=$dir/tmp/%n
NodeName=n[1-${#nodes[@]}] NodeHostname=$host NodeAddr=127.0.0.1 Port=[$node_port-$last_port] CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=n[1-${#nodes[@]}] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:64
EOF
}

start_munge() {
  if munge_works; then
    say "munged is already running; using it"
    return 0
  fi
  local key=/etc/munge/munge.key
  local args=()
  if [ ! -f "$key" ]; then
    # No system key: make one in the scratch folder, readable by munge only.
    install -d -o munge -g munge -m 0700 "$dir/munge"
    key=$dir/munge/munge.key
    runuser -u munge -- mungekey --create --keyfile="$key"
    args+=(--key-file="$key")
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged "${args[@]}" \
    || die "munged did not start (see /var/log/munge/munged.log)"
  local pid
  pid=$(live_pid /run/munge/munged.pid munged)
  [ -n "$pid" ] || die "munged started but /run/munge/munged.pid names no munged"
  echo "$pid" >"$dir/run/munged.pid"   # so `down` stops it, and only it
  for _ in $(seq 50); do munge_works && return 0; sleep 0.1; done
  die "munged is running (pid $pid) but 'munge -n | unmunge' fails"
}

idle_nodes() {
  SLURM_CONF=$conf sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l
}

cmd_up() {
  if [ -n "$(live_pid "$dir/run/slurmctld.pid" slurmctld)" ]; then
    say "already up ($dir)"
    SLURM_CONF=$conf sinfo
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "run as root (slurmd runs jobs as their user)"
  "$here/install-deps.sh" slurm   # a no-op when everything is there
  # A folder left by a cluster that died: its daemons are gone (checked above
  # for slurmctld; the slurmd are stopped here), so start from scratch.
  if [ -f "$marker" ]; then
    local stale
    stale=$(daemon_pids | tr '\n' ' ')
    [ -z "${stale// }" ] || { kill -KILL $stale 2>/dev/null || true; }
    local old_munged
    old_munged=$(live_pid "$dir/run/munged.pid" munged)
    rm -rf "$dir/state" "$dir/spool" "$dir/tmp" "$dir/log" "$dir/run"/slurm*.pid
    [ -z "$old_munged" ] || { mkdir -p "$dir/run"; echo "$old_munged" >"$dir/run/munged.pid"; }
  elif [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    die "$dir exists and is not a cluster folder of this script; set DRAGON_SLURM_DIR"
  fi
  mkdir -p "$dir"/{state,run,log,spool,tmp}
  touch "$marker"
  for n in "${nodes[@]}"; do mkdir -p "$dir/spool/slurmd-$n" "$dir/tmp/$n"; done
  write_conf
  [ -f "$dir/run/munged.pid" ] || start_munge

  export SLURM_CONF=$conf   # inherited by every slurmstepd: how `down` finds strays
  slurmctld -f "$conf" -c || { tail_logs; die "slurmctld did not start"; }
  for n in "${nodes[@]}"; do
    slurmd -f "$conf" -N "$n" || { tail_logs; die "slurmd -N $n did not start"; }
  done

  local deadline=$((SECONDS + up_timeout))
  while [ "$(idle_nodes)" -lt ${#nodes[@]} ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "slurm-cluster: no ${#nodes[@]} idle nodes after ${up_timeout}s; sinfo says:" >&2
      SLURM_CONF=$conf sinfo -N >&2 || true
      tail_logs
      die "not up; '$0 down' cleans up"
    fi
    sleep 0.3
  done
  say "up: ${#nodes[@]} idle nodes, config $conf"
  SLURM_CONF=$conf sinfo
}

cmd_down() {
  if [ ! -f "$marker" ]; then
    say "not up ($dir has no cluster)"
    return 0
  fi
  local pids
  pids=$(daemon_pids | tr '\n' ' ')
  if [ -n "$(live_pid "$dir/run/slurmctld.pid" slurmctld)" ]; then
    # Jobs first, so their steps end before the slurmd that watch them.
    local jobs
    jobs=$(SLURM_CONF=$conf squeue -h -o '%i' 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      SLURM_CONF=$conf scancel $jobs 2>/dev/null || true
      local deadline=$((SECONDS + 10))
      while [ -n "$(SLURM_CONF=$conf squeue -h -o '%i' 2>/dev/null)" ] && [ $SECONDS -lt $deadline ]; do
        sleep 0.2
      done
    fi
    SLURM_CONF=$conf scontrol shutdown || true
  fi
  local left
  left=$(wait_exit "$down_timeout" $pids)
  if [ -n "$left" ]; then
    say "daemons $left still running after ${down_timeout}s; SIGKILL"
    kill -KILL $left 2>/dev/null || true
    wait_exit 5 $left >/dev/null
  fi
  local strays
  strays=$(stepd_pids | tr '\n' ' ')
  if [ -n "${strays// }" ]; then
    say "slurmstepd $strays outlived the daemons; SIGKILL"
    kill -KILL $strays 2>/dev/null || true
  fi
  local munged
  munged=$(live_pid "$dir/run/munged.pid" munged)
  if [ -n "$munged" ]; then
    kill -TERM "$munged" 2>/dev/null || true
    left=$(wait_exit 5 "$munged")
    [ -z "$left" ] || kill -KILL "$left" 2>/dev/null || true
  fi
  rm -rf "$dir"
  say "down"
}

cmd_status() {
  if [ -z "$(live_pid "$dir/run/slurmctld.pid" slurmctld)" ]; then
    say "not up ($dir)"
    return 1
  fi
  SLURM_CONF=$conf sinfo
}

cmd_env() {
  echo "export SLURM_CONF=$conf"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
