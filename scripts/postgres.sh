#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the distributed journal.
#   eval "$(bash scripts/postgres.sh start)"   installs Debian's server package if it is missing, starts a
#                                               server on 127.0.0.1 (a free port, trust auth, a temporary data
#                                               directory) and prints the exports EVOMERGE_TEST_POSTGRES (its
#                                               URL) and EVOMERGE_TEST_POSTGRES_DIR
#   bash scripts/postgres.sh stop DIR          stops it and removes DIR
# Messages go to stderr; stdout carries only the exports.
set -euo pipefail

bindir() {
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(command -v pg_ctl)"
    return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# As root the server runs as the `postgres` user (it refuses to run as root).
as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$server_user" -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
  bin=$(bindir)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "postgres.sh: no PostgreSQL server here; installing Debian's package (postgresql)" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      command -v sudo >/dev/null || { echo "postgres.sh: need root or sudo to install postgresql" >&2; exit 1; }
      sudo=sudo
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(bindir)
    [ -x "$bin/initdb" ] || { echo "postgres.sh: postgresql installed but initdb not found" >&2; exit 1; }
  fi
  server_user=postgres
  if [ "$(id -u)" = 0 ] && ! id "$server_user" >/dev/null 2>&1; then server_user=nobody; fi
  dir=$(mktemp -d /tmp/evomerge-pg.XXXXXX)
  chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown "$server_user" "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_server "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >&2 ||
    { cat "$dir/server.log" >&2; exit 1; }
  echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)" >&2
  echo "export EVOMERGE_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$port/postgres"
  echo "export EVOMERGE_TEST_POSTGRES_DIR=$dir"
  ;;
stop)
  dir=${2:?usage: postgres.sh stop DIR}
  [ -d "$dir/data" ] || exit 0
  server_user=$(stat -c %U "$dir")
  bin=$(bindir)
  as_server "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: postgres.sh start | stop DIR" >&2
  exit 2
  ;;
esac
