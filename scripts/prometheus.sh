#!/usr/bin/env bash
# A throwaway Prometheus server for the test suite (and for a quick look at the dashboard's queries).
#
#   scripts/prometheus.sh install                  install Prometheus if missing (Debian/apt, as root) and print
#                                                  the path of its binary as the last stdout line
#   scripts/prometheus.sh start DIR TARGET [PORT]  run Prometheus with its config and TSDB in DIR, scraping
#                                                  http://TARGET/metrics (TARGET: host:port) every second,
#                                                  listening on 127.0.0.1:PORT (default: a free port); print
#                                                  its URL as the last stdout line once it is ready
#   scripts/prometheus.sh stop DIR                 stop that server and delete DIR
#
# The binary is $PROMETHEUS_BIN, else `prometheus` on PATH, else /usr/bin/prometheus (Debian's package).
# The package's own service (prometheus.service, port 9090, /var/lib/prometheus) is never used: where its
# postinst may start it (a systemd host), it is left as the package set it up.
# Starting an already running server only prints its URL again. Progress goes to stderr.
set -euo pipefail

MARKER=.m2n2-throwaway-prometheus

log() { echo "prometheus.sh: $*" >&2; }

find_bin() {
    local bin
    for bin in "${PROMETHEUS_BIN:-}" "$(command -v prometheus 2>/dev/null || true)" /usr/bin/prometheus; do
        if [ -n "$bin" ] && [ -x "$bin" ]; then
            echo "$bin"
            return 0
        fi
    done
    return 1
}

install() {
    local bin
    if bin=$(find_bin); then
        echo "$bin"
        return
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "Prometheus is not installed and cannot be installed here (needs root and apt-get)"
        return 1
    fi
    log "installing Prometheus from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for a concurrent apt/dpkg (say, scripts/postgres.sh installing PostgreSQL) instead of failing.
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends prometheus >&2
    bin=$(find_bin) || { log "the prometheus package installed no binary at /usr/bin/prometheus"; return 1; }
    echo "$bin"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running() { [ -f "$1/pid" ] && kill -0 "$(cat "$1/pid")" 2>/dev/null; }

url() { echo "http://127.0.0.1:$(cat "$1/port")"; }

# Poll /-/ready until it answers 200, the process dies or 60 s pass.
wait_ready() {
    local dir=$1
    python3 - "$(url "$dir")/-/ready" "$(cat "$dir/pid")" <<'EOF'
import os, sys, time, urllib.request

ready, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("prometheus exited")
    try:
        with urllib.request.urlopen(ready, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("prometheus was not ready within 60 s")
EOF
}

start() {
    local dir=${1:?usage: $0 start DIR TARGET [PORT]} target=${2:?usage: $0 start DIR TARGET [PORT]} port=${3:-} bin
    bin=$(install | tail -n 1) || exit 1
    target=${target#http://}
    target=${target%%/*}
    mkdir -p "$dir"
    touch "$dir/$MARKER"
    if running "$dir"; then
        log "already running in $dir"
        url "$dir"
        return
    fi
    [ -n "$port" ] || port=$(free_port)
    echo "$port" >"$dir/port"
    cat >"$dir/prometheus.yml" <<EOF
# Written by scripts/prometheus.sh: scrape one m2n2 service every second.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: m2n2
    metrics_path: /metrics
    static_configs:
      - targets: ["$target"]
EOF
    "$bin" \
        --config.file="$dir/prometheus.yml" \
        --storage.tsdb.path="$dir/data" \
        --storage.tsdb.retention.time=1d \
        --web.listen-address="127.0.0.1:$port" \
        --log.level=warn \
        </dev/null >"$dir/prometheus.log" 2>&1 &
    echo $! >"$dir/pid"
    if ! wait_ready "$dir"; then
        log "Prometheus did not start; its log:"
        tail -n 20 "$dir/prometheus.log" >&2 || true
        stop "$dir"
        exit 1
    fi
    log "Prometheus $(url "$dir") scrapes http://$target/metrics (stop: $0 stop $dir)"
    url "$dir"
}

stop() {
    local dir=${1:?usage: $0 stop DIR} pid i
    [ -d "$dir" ] || return 0
    [ -f "$dir/$MARKER" ] || { log "$dir is not a throwaway server made by this script; leaving it alone"; exit 1; }
    if running "$dir"; then
        pid=$(cat "$dir/pid")
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" "${3:-}" "${4:-}" ;;
    stop) stop "${2:-}" ;;
    *) log "usage: $0 install | start DIR TARGET [PORT] | stop DIR"; exit 2 ;;
esac
