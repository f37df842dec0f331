#!/usr/bin/env bash
# Start a local PostgreSQL for rewardlab's store tests and print the URL to use.
#
# Idempotent: safe to run when the server is already up, the role or database already exists.
# Needs root (it talks to the cluster as the `postgres` OS user). Uses the unix socket with peer
# auth, so no password is created or printed.
#
#   export REWARDLAB_TEST_PG_URL="$(scripts/start_postgres.sh | tail -n 1)"
set -euo pipefail

PG_VERSION="${PG_VERSION:-15}"
PG_CLUSTER="${PG_CLUSTER:-main}"
PG_ROLE="${PG_ROLE:-root}"
PG_DB="${PG_DB:-rewardlab_test}"
SOCKET_DIR="/var/run/postgresql"

die() { echo "start_postgres.sh: $*" >&2; exit 1; }
# Progress goes to stderr so stdout carries only the URL (callers capture it).
log() { echo "start_postgres.sh: $*" >&2; }
as_postgres() { su postgres -s /bin/sh -c "$1"; }
psql_admin() { as_postgres "psql -v ON_ERROR_STOP=1 -At -p '$PG_PORT' -c \"$1\""; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it starts the cluster as the postgres user)"
command -v pg_lsclusters >/dev/null || die "postgresql-common not installed (apt-get install postgresql-$PG_VERSION)"
[ -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres" ] || die "PostgreSQL $PG_VERSION is not installed"

# pg_lsclusters prints: Ver Cluster Port Status Owner Data-dir Log
cluster_line() { pg_lsclusters --no-header 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c'; }

if [ -z "$(cluster_line)" ]; then
    log "creating cluster $PG_VERSION/$PG_CLUSTER"
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >&2 || die "pg_createcluster $PG_VERSION $PG_CLUSTER failed"
fi
PG_PORT="$(cluster_line | awk '{print $3}')"

if ! cluster_line | grep -q online; then
    log "starting cluster $PG_VERSION/$PG_CLUSTER on port $PG_PORT"
    # The socket dir lives on tmpfs in containers and may be missing after a restart.
    mkdir -p "$SOCKET_DIR" && chown postgres:postgres "$SOCKET_DIR" && chmod 2775 "$SOCKET_DIR"
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" start >&2 \
        || die "could not start cluster $PG_VERSION/$PG_CLUSTER; see /var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log"
fi

for _ in $(seq 1 30); do
    pg_isready -q -h "$SOCKET_DIR" -p "$PG_PORT" && break
    sleep 1
done
pg_isready -q -h "$SOCKET_DIR" -p "$PG_PORT" || die "server on $SOCKET_DIR port $PG_PORT not ready after 30 s"

if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'")" != "1" ]; then
    log "creating superuser role $PG_ROLE"
    psql_admin "CREATE ROLE \\\"$PG_ROLE\\\" SUPERUSER LOGIN" >/dev/null || die "could not create role $PG_ROLE"
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
    log "creating database $PG_DB"
    psql_admin "CREATE DATABASE \\\"$PG_DB\\\" OWNER \\\"$PG_ROLE\\\"" >/dev/null || die "could not create database $PG_DB"
fi

PORT_PARAM=""
[ "$PG_PORT" = "5432" ] || PORT_PARAM="&port=$PG_PORT"
log "ready"
echo "postgresql+psycopg://$PG_ROLE@/$PG_DB?host=$SOCKET_DIR$PORT_PARAM"
