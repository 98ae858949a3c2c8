#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's packages (tests/setup.sh installs
# them): `tests/postgres.sh start DIR` makes a cluster in DIR, listening only on a Unix socket in
# DIR, and prints its connection string; `tests/postgres.sh stop DIR` stops it at once.
# initdb refuses to run as root, so the server runs as the system user invigilator-pg.
# With PG_TLS_DIR (holding server.crt and server.key) and PG_PORT, it also listens on
# 127.0.0.1:PG_PORT for TLS connections only, and prints that connection string instead.
# With PG_TCP_PORT instead: plain TCP on 127.0.0.1 and 127.0.0.2 at that port.
set -euo pipefail
cmd="${1:?usage: postgres.sh start|stop|restart DIR}"
dir="${2:?usage: postgres.sh start|stop|restart DIR}"
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
      # A private temporary parent (mktemp -d) must at least let the server's user through.
      chmod o+x "$(dirname "$dir")"
    fi
    as_pg "$bin/initdb" --no-sync -U postgres -A trust -E UTF8 --locale=C.UTF-8 -D "$dir/data" >"$dir/initdb.log"
    if [ -n "${PG_TLS_DIR:-}" ]; then
      # The key must be the server's own and private, or PostgreSQL will not start.
      install -m 0600 -o "$(stat -c %U "$dir")" "$PG_TLS_DIR/server.key" "$dir/server.key"
      install -m 0644 -o "$(stat -c %U "$dir")" "$PG_TLS_DIR/server.crt" "$dir/server.crt"
      # TCP only with TLS; the Unix socket stays open for the test's own checks.
      printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
      as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-k $dir -c listen_addresses=127.0.0.1 -p ${PG_PORT:?} -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" start >/dev/null
      echo "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
      exit 0
    fi
    if [ -n "${PG_TCP_PORT:-}" ]; then
      # Plain TCP on two loopback addresses, so a test can cut off one client's address.
      printf 'local all all trust\nhost all all 127.0.0.0/8 trust\n' >"$dir/data/pg_hba.conf"
      as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-k $dir -c listen_addresses=127.0.0.1,127.0.0.2 -p $PG_TCP_PORT -c max_connections=300" start >/dev/null
      echo "host=127.0.0.1 port=$PG_TCP_PORT user=postgres dbname=postgres"
      exit 0
    fi
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-k $dir -c listen_addresses='' -c max_connections=300" start >/dev/null
    echo "host=$dir user=postgres dbname=postgres"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
  restart)
    # As after a crash: every connection cut, then the server back with the same options.
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m immediate -w restart >/dev/null
    ;;
  *)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
