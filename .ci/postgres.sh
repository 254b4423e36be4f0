#!/usr/bin/env bash
# Start a throw-away PostgreSQL 15 server on loopback for the tests and print the SQLAlchemy URL
# of its database. Usage: eval "$(.ci/postgres.sh DIR PORT)"  -> exports MRIMASTER_TEST_DATABASE_URL
# initdb refuses to run as root: as root, the server runs as the 'postgres' system user.
set -euo pipefail
dir="${1:?data folder}"; port="${2:-55432}"
run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
run initdb -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
run pg_ctl -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
run createdb -h 127.0.0.1 -p "$port" -U postgres mrimaster_test
echo "export MRIMASTER_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:$port/mrimaster_test"
echo "export MRIMASTER_TEST_PGDATA=$dir/data"
