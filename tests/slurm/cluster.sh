#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on 127.0.0.1 (munged + slurmctld + slurmd -N localhost), for
# tests/workflow/test_slurm.py and for trying `snakemake --profile profiles/slurm` by hand. Needs root.
#
#   tests/slurm/cluster.sh install   # apt-get install slurmctld slurmd slurm-client munge (when missing)
#   tests/slurm/cluster.sh up        # write /etc/slurm/slurm.conf, start the daemons, wait for an idle node
#   tests/slurm/cluster.sh down [PID ...]  # stop the daemons `up` started (all, or these), by PID, nothing
#                                    # else; remove /etc/slurm/slurm.conf once no slurmctld runs
#   tests/slurm/cluster.sh status    # sinfo
#
# `up` writes /etc/slurm/slurm.conf from slurm.conf.in (the job-step plugin strips SLURM_CONF, so the file
# must be at the default path) and refuses to overwrite a slurm.conf it did not write. It records the PIDs
# of the daemons it starts in $SVALIGN_SLURM_STATE/pids and prints "started NAME PID" for each; `down`
# stops recorded daemons only. Daemons that were already running (a munged of the system, or a cluster
# left up with this configuration) are reused and left alone. Exit codes: 0 ok, 1 failure, 3 cannot run here (not root, no apt-get, foreign slurm.conf).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${SVALIGN_SLURM_STATE:-/var/lib/svalign-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# svalign-test-cluster"
PIDS="$STATE/pids"
PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "cluster.sh: $1" >&2; exit "${2:-1}"; }
need_root() { [[ $(id -u) -eq 0 ]] || die "needs root (installs packages, writes $CONF, starts daemons)" 3; }
have_binaries() { command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged; } >/dev/null
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
cluster_answers() { timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; }

# Wait up to $2 seconds for the pid file $1 and print the PID in it.
wait_pidfile() {
    local file=$1 deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        if [[ -s "$file" ]] && alive "$(cat "$file")"; then cat "$file"; return 0; fi
        sleep 0.2
    done
    return 1
}

record() { echo "$1 $2" >>"$PIDS"; echo "started $1 $2"; }  # name pid

# PID of a daemon recorded by an earlier `up` that is still running (a test killed before its teardown).
recorded_alive() {
    local name=$1 pid
    [[ -f "$PIDS" ]] || return 1
    pid=$(awk -v n="$name" '$1 == n {p = $2} END {print p}' "$PIDS")
    alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] && echo "$pid"
}

cmd_install() {
    if have_binaries; then echo "SLURM and munge already installed"; return 0; fi
    need_root
    command -v apt-get >/dev/null || die "no apt-get on this machine: install ${PACKAGES[*]} by hand" 3
    # No recommends: the daemons only. In containers policy-rc.d stops the packages starting services;
    # on a systemd machine munge starts and is reused by `up`; slurmctld/slurmd need a slurm.conf first.
    # A fresh image may have no package lists yet: `apt-get update` once, then try again.
    # DPkg::Lock::Timeout: the browser tests may be installing Chromium at the same moment (another pytest worker).
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${PACKAGES[@]}")
    "${apt[@]}" || { apt-get -o DPkg::Lock::Timeout=600 update -q && "${apt[@]}"; } || die "apt-get install ${PACKAGES[*]} failed" 3
    have_binaries || die "installed ${PACKAGES[*]} but slurmctld/slurmd/sbatch/munged are not on PATH" 3
}

write_conf() {
    if [[ -f "$CONF" ]] && ! grep -q "^$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script: refusing to overwrite a real cluster's config" 3
    fi
    local cpus mem_kb
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    # 97 % of MemTotal: slurmd drains a node that reports less memory than configured.
    mkdir -p /etc/slurm "$STATE/slurmctld" "$STATE/slurmd"
    sed -e "s|@CPUS@|$cpus|" -e "s|@REAL_MEMORY@|$((mem_kb * 97 / 100 / 1024))|" -e "s|@STATE_DIR@|$STATE|g" \
        "$HERE/slurm.conf.in" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    local pid
    if munge_works; then echo "munged already running: reusing it"; return 0; fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 0400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    rm -f /run/munge/munged.pid
    if id munge >/dev/null 2>&1; then runuser -u munge -- munged; else munged --force; fi
    pid=$(wait_pidfile /run/munge/munged.pid 10) || die "munged did not start"
    record munged "$pid"
    munge_works || die "munged started but munge -n | unmunge fails"
}

start_slurm() {
    local pid
    if pid=$(recorded_alive slurmctld) && cluster_answers; then
        echo "slurmctld $pid (started by an earlier 'up') is running: reusing it"
    elif cluster_answers; then
        echo "a slurmctld with this configuration is already running: reusing it (not stopped by 'down')"
    else
        # -c: clean start, forget jobs of an earlier cluster.
        slurmctld -c
        pid=$(wait_pidfile "$STATE/slurmctld.pid" 15) || die "slurmctld did not start; see $STATE/slurmctld.log"
        record slurmctld "$pid"
    fi
    if pid=$(recorded_alive slurmd); then
        echo "slurmd $pid (started by an earlier 'up') is running: reusing it"
    elif [[ -s "$STATE/slurmd.pid" ]] && alive "$(cat "$STATE/slurmd.pid")"; then
        echo "a slurmd with this configuration is already running: reusing it (not stopped by 'down')"
    else
        slurmd -N localhost
        pid=$(wait_pidfile "$STATE/slurmd.pid" 15) || die "slurmd did not start; see $STATE/slurmd.log"
        record slurmd "$pid"
    fi
    local deadline=$((SECONDS + 60)) state=""
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -N -n localhost -o %T 2>/dev/null || true)
        case "$state" in
            idle | mixed | allocated) echo "SLURM node localhost is $state"; return 0 ;;
            drain* | down*) scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    die "node localhost is not idle after 60 s (state '$state'); see $STATE/slurmctld.log and $STATE/slurmd.log"
}

cmd_up() {
    need_root
    have_binaries || die "SLURM is not installed: run '$0 install' first" 3
    mkdir -p "$STATE"
    write_conf
    start_munge
    start_slurm
}

# down [PID ...]: stop the recorded daemons (only those of the given PIDs, if any), newest first.
cmd_down() {
    [[ -f "$PIDS" ]] || { echo "nothing to stop"; remove_conf; return 0; }
    local name pid keep="" stopping=()
    while read -r name pid; do
        if (($# > 0)) && [[ " $* " != *" $pid "* ]]; then keep="$name $pid"$'\n'"$keep"; continue; fi
        # The PID must still be that daemon (not a recycled PID).
        if alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
            kill -TERM "$pid"
            stopping+=("$pid")
            echo "stopping $name $pid"
        fi
    done < <(tac "$PIDS")
    # Each takes ~2 s to shut down: wait for all together, at most 10 s, then SIGKILL.
    for _ in $(seq 50); do
        local left=()
        for pid in "${stopping[@]}"; do if alive "$pid"; then left+=("$pid"); fi; done
        ((${#left[@]} > 0)) || break
        sleep 0.2
    done
    for pid in "${stopping[@]}"; do if alive "$pid"; then kill -KILL "$pid"; echo "killed $pid"; fi; done
    if [[ -n "$keep" ]]; then printf '%s' "$keep" >"$PIDS"; else rm -f "$PIDS"; fi
    remove_conf
}

# With a slurm.conf whose controller is down, every `scontrol` waits ~10 s for it — and the executor
# plugin runs `scontrol show config` whenever Snakemake starts, on any executor. So the config goes when
# the controller does (`up` writes it again).
remove_conf() {
    if [[ -f "$CONF" ]] && grep -q "^$MARKER" "$CONF" && ! grep -qsx slurmctld /proc/[0-9]*/comm; then
        rm -f "$CONF"
        echo "removed $CONF"
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    up) cmd_up ;;
    down) shift; cmd_down "$@" ;;
    status) sinfo ;;
    *) die "usage: $0 install|up|down|status" ;;
esac
