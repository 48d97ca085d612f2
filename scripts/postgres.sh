#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite.
#
#   scripts/postgres.sh [start [DIR]]   install PostgreSQL if missing (Debian/apt, as root), start a cluster
#                                       in DIR (default: a new temporary directory) on a free loopback port,
#                                       create database m2n2_test and print its URL as the last stdout line
#   scripts/postgres.sh stop DIR        stop that cluster and delete DIR
#
# Starting an already running cluster only prints its URL again. Progress goes to stderr.
set -euo pipefail

DB=m2n2_test
MARKER=.m2n2-throwaway-postgres

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
        return 1
    fi
    log "installing PostgreSQL from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
}

# Run a PostgreSQL program as the cluster owner: initdb and postgres refuse to run as root.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

url() { echo "postgresql+psycopg://postgres@127.0.0.1:$(cat "$1/port")/$DB"; }

start() {
    local dir=${1:-} bin port
    bin=$(find_bin) || { install && bin=$(find_bin); } || { log "no pg_ctl under /usr/lib/postgresql/*/bin"; exit 1; }
    [ -n "$dir" ] || dir=$(mktemp -d -t m2n2-postgres.XXXXXX)
    mkdir -p "$dir"
    touch "$dir/$MARKER"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
    if [ -f "$dir/port" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        log "already running in $dir"
        url "$dir"
        return
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        # Trust auth on loopback only; fsync off: the data is thrown away, speed matters more.
        as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >/dev/null
    fi
    port=$(free_port)
    echo "$port" >"$dir/port"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        >/dev/null
    if [ -z "$(as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
        as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB"
    fi
    log "cluster running in $dir (stop: $0 stop $dir)"
    url "$dir"
}

stop() {
    local dir=${1:?usage: $0 stop DIR} bin
    [ -f "$dir/$MARKER" ] || { log "$dir is not a throwaway cluster made by this script; leaving it alone"; exit 1; }
    if bin=$(find_bin) && [ -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "${1:-start}" in
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) log "usage: $0 [start [DIR]] | stop DIR"; exit 2 ;;
esac
