#!/usr/bin/env bash
# Stop the daemons tests/slurm/start_cluster.sh started: only the PIDs in its PID files
# ($REALFAKE_SLURM_STATE/pids, default /var/tmp/realfake-slurm/pids), each checked to still run
# the daemon it names. Jobs still running on the node end with slurmd.
set -euo pipefail

STATE="${REALFAKE_SLURM_STATE:-/var/tmp/realfake-slurm}"

stop() { # stop NAME: SIGTERM the PID in NAME.pid if it runs NAME, then wait up to 10 s
    local pidfile="$STATE/pids/$1.pid" pid
    pid="$(cat "$pidfile" 2>/dev/null)" || return 0
    if [[ -n $pid && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]; then
        kill -TERM "$pid"
        for _ in $(seq 50); do
            [[ -d /proc/$pid ]] || break
            sleep 0.2
        done
        [[ -d /proc/$pid ]] && echo "stop_cluster: $1 ($pid) still running" >&2
    fi
    rm -f "$pidfile"
}

# stop_cluster.sh [NAME ...]: the given daemons only (start_cluster.sh restarts slurmd and
# slurmctld after a configuration change); all three by default
[[ $# -gt 0 ]] || set -- slurmd slurmctld munged
for name in "$@"; do
    stop "$name"
done
echo "stop_cluster: stopped $*" >&2
