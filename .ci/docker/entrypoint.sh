#!/bin/sh
# The official postgres image's contract, for an image built here from Debian's packages (no
# registry answers on CI): POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and PGDATA are read, and
# the container's arguments go to postgres (`-c fsync=off ...`), with listen_addresses='*'.
set -eu
bin=$(echo /usr/lib/postgresql/*/bin)
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
data=${PGDATA:-/var/lib/postgresql/data}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
[ "${1:-}" = postgres ] && shift
mkdir -p "$data" /var/run/postgresql
chown postgres:postgres "$data" /var/run/postgresql
chmod 700 "$data"
cd /tmp
if [ ! -s "$data/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile && chown postgres /tmp/pwfile
    as_postgres "$bin/initdb" -D "$data" -U "$user" -E UTF8 --locale=C.UTF-8 --auth-local=trust \
      --auth-host=scram-sha-256 --pwfile=/tmp/pwfile >/dev/null
    rm -f /tmp/pwfile && method=scram-sha-256
  else
    as_postgres "$bin/initdb" -D "$data" -U "$user" -E UTF8 --locale=C.UTF-8 --auth=trust >/dev/null
    method=trust
  fi
  echo "host all all 0.0.0.0/0 $method" >>"$data/pg_hba.conf"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\"" | as_postgres "$bin/postgres" --single -D "$data" postgres >/dev/null
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$data" -c "listen_addresses=*" "$@"
