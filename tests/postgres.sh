#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's packages (tests/setup.sh installs
# them): `tests/postgres.sh start DIR` makes a cluster in DIR, listening only on a Unix socket in
# DIR, and prints its connection string; `tests/postgres.sh stop DIR` stops it at once.
# initdb refuses to run as root, so the server runs as the system user invigilator-pg.
set -euo pipefail
cmd="${1:?usage: postgres.sh start|stop DIR}"
dir="${2:?usage: postgres.sh start|stop DIR}"
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u invigilator-pg -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    if [ "$(id -u)" = 0 ]; then
      id invigilator-pg >/dev/null 2>&1 \
        || useradd --system --no-create-home --shell /usr/sbin/nologin invigilator-pg
      mkdir -p "$dir"
      chown invigilator-pg "$dir"
    fi
    as_pg "$bin/initdb" --no-sync -U postgres -A trust -E UTF8 --locale=C.UTF-8 -D "$dir/data" >"$dir/initdb.log"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-k $dir -c listen_addresses='' -c max_connections=300" start >/dev/null
    echo "host=$dir user=postgres dbname=postgres"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
  *)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
