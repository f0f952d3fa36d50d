#!/usr/bin/env bash
# Bring up a one-node SLURM test cluster on this machine (Debian 12, as root, no systemd needed):
# munged, slurmctld and slurmd with fake GPUs, configured for the realfake SLURM test.
#
#   bash tests/slurm/start_cluster.sh      # idempotent: running daemons are left alone, unless
#                                          # the configuration it writes changed (then restarted)
#   bash tests/slurm/stop_cluster.sh       # stops only the daemons this script started
#
# Installs slurmctld, slurmd, slurm-client and munge with apt-get when missing (a policy-rc.d
# keeps the package scripts from starting services). Writes /etc/slurm/{slurm.conf,gres.conf}
# unless a slurm.conf not written by this script exists (a real cluster node: exit 3). PID files,
# logs and spool live in $REALFAKE_SLURM_STATE (default /var/tmp/realfake-slurm).
# Exit codes: 0 cluster up, 2 not root / no apt-get, 3 foreign slurm.conf, 1 anything else.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${REALFAKE_SLURM_STATE:-/var/tmp/realfake-slurm}"
GPUS="${REALFAKE_SLURM_GPUS:-2}"
MARKER="managed-by: realfake tests/slurm/start_cluster.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)

die() {
    echo "start_cluster: $2" >&2
    exit "$1"
}

[[ $(id -u) -eq 0 ]] || die 2 "must run as root"

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die 2 "apt-get not available to install ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    echo "start_cluster: installing ${missing[*]}" >&2
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >"$STATE/log/apt.log" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        apt-get update -q >>"$STATE/log/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
                >>"$STATE/log/apt.log" 2>&1 && rc=0
    fi
    [[ $created_policy -eq 1 ]] && rm -f "$policy"
    [[ $rc -eq 0 ]] || die 2 "apt-get install failed (see $STATE/log/apt.log)"
}

# render TEMPLATE DEST: fill the @KEY@ placeholders
render() {
    local node_hw realmem_kb
    node_hw="$(slurmd -C | head -n1 | grep -o 'CPUs=[^ ]* .*ThreadsPerCore=[0-9]*')"
    realmem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@GPUS@|$GPUS|g" \
        -e "s|@LASTGPU@|$((GPUS - 1))|g" -e "s|@NODE_HW@|$node_hw|g" \
        -e "s|@REALMEM@|$((realmem_kb * 85 / 100 / 1024))|g" "$1" >"$2.tmp"
    mv -f "$2.tmp" "$2"
}

write_config() {
    if [[ -e /etc/slurm/slurm.conf ]] && ! grep -q "$MARKER" /etc/slurm/slurm.conf; then
        die 3 "/etc/slurm/slurm.conf exists and was not written by this script; not touching it"
    fi
    mkdir -p /etc/slurm "$STATE/dev"
    local i
    for ((i = 0; i < GPUS; i++)); do
        [[ -e $STATE/dev/gpu$i ]] || mknod "$STATE/dev/gpu$i" c 1 3 # a /dev/null twin
    done
    local before
    before="$(cat /etc/slurm/slurm.conf /etc/slurm/gres.conf 2>/dev/null | sha256sum)"
    render "$HERE/slurm.conf.in" /etc/slurm/slurm.conf
    render "$HERE/gres.conf.in" /etc/slurm/gres.conf
    if [[ "$(cat /etc/slurm/slurm.conf /etc/slurm/gres.conf | sha256sum)" != "$before" ]] &&
        { running slurmctld || running slurmd; }; then
        echo "start_cluster: configuration changed: restarting slurmd and slurmctld" >&2
        bash "$HERE/stop_cluster.sh" slurmd slurmctld
    fi
}

# running NAME: true when $STATE/pids/NAME.pid names a live process running NAME
running() {
    local pid
    pid="$(cat "$STATE/pids/$1.pid" 2>/dev/null)" || return 1
    [[ -n $pid && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die 1 "timed out waiting for $what (logs in $STATE/log)"
        sleep 0.2
    done
}

node_idle() { sinfo -h -N -o '%t' | grep -qx 'idle\|mix\|alloc'; }

start_daemons() {
    install -d -o munge -g munge -m 0700 "$STATE/munge"
    install -d -o munge -g munge -m 0755 /run/munge
    if ! running munged; then
        [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
        runuser -u munge -- munged --force --pid-file="$STATE/munge/munged.pid" \
            --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
        wait_for 10 "munged pid file" test -s "$STATE/munge/munged.pid"
    fi
    ln -sf "$STATE/munge/munged.pid" "$STATE/pids/munged.pid"
    wait_for 10 munge munge -n
    running slurmctld || slurmctld
    wait_for 20 slurmctld scontrol ping
    running slurmd || slurmd -N "$HOST"
    wait_for 30 "node $HOST idle" node_idle
}

mkdir -p "$STATE/pids" "$STATE/log" "$STATE/ctld" "$STATE/spool"
HOST="$(hostname -s)"
install_packages
write_config
start_daemons
echo "start_cluster: up: $(sinfo -h -N -o '%N %t %c CPUs %m MB %G')" >&2
