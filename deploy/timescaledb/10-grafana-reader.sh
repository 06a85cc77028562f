#!/bin/sh
# Runs once, when the database volume is initialised (docker-entrypoint-initdb.d).
# Creates `grafana_reader`, a login that can read every table and view parkd creates in the
# public schema, and nothing else. Grafana runs arbitrary SQL typed into a panel, so it must
# not use parkd's own login.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set reader_password="${GRAFANA_DB_PASSWORD:?GRAFANA_DB_PASSWORD is not set}" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE :"DBNAME" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
-- Tables and views that `parkd migrate` creates later, as the database owner.
ALTER DEFAULT PRIVILEGES FOR ROLE :"USER" IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
