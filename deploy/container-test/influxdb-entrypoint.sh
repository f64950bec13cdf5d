#!/bin/bash
# What the official influxdb:1.8 image's entrypoint does on a first start (empty data
# volume): start influxd on loopback with auth off, create the database and the users
# from the environment, stop it, then run the real command.
set -euo pipefail
mkdir -p /var/lib/influxdb/meta
if [ ! -e /var/lib/influxdb/meta/meta.db ] && [ -n "${INFLUXDB_DB:-}" ]; then
  INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:8086 INFLUXDB_HTTP_AUTH_ENABLED=false influxd -config /etc/influxdb/influxdb.conf &
  init=$!
  for _ in $(seq 1 300); do curl -sf http://127.0.0.1:8086/ping && break; sleep 0.1; done
  q() { curl -sf -o /dev/null -XPOST http://127.0.0.1:8086/query --data-urlencode "q=$1"; }
  q "CREATE DATABASE \"$INFLUXDB_DB\""
  if [ -n "${INFLUXDB_ADMIN_USER:-}" ]; then q "CREATE USER \"$INFLUXDB_ADMIN_USER\" WITH PASSWORD '$INFLUXDB_ADMIN_PASSWORD' WITH ALL PRIVILEGES"; fi
  if [ -n "${INFLUXDB_WRITE_USER:-}" ]; then
    q "CREATE USER \"$INFLUXDB_WRITE_USER\" WITH PASSWORD '$INFLUXDB_WRITE_USER_PASSWORD'"
    q "GRANT WRITE ON \"$INFLUXDB_DB\" TO \"$INFLUXDB_WRITE_USER\""
  fi
  if [ -n "${INFLUXDB_READ_USER:-}" ]; then
    q "CREATE USER \"$INFLUXDB_READ_USER\" WITH PASSWORD '$INFLUXDB_READ_USER_PASSWORD'"
    q "GRANT READ ON \"$INFLUXDB_DB\" TO \"$INFLUXDB_READ_USER\""
  fi
  kill "$init"; wait "$init" || true
fi
exec "$@"
