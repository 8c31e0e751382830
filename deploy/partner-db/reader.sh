#!/bin/sh
# Runs once, when the partner database is created (docker-entrypoint-initdb.d): a role that
# can only read the customer table. fedprofile's node connects as this role; its password
# comes from a Docker secret, never from the compose file or the node config.
set -eu
reader_password="$(cat /run/secrets/partner-db-reader)"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader_password="$reader_password" <<'SQL'
CREATE ROLE fedprofile_reader LOGIN PASSWORD :'reader_password';
ALTER ROLE fedprofile_reader SET default_transaction_read_only = on;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE crm TO fedprofile_reader;
GRANT USAGE ON SCHEMA public TO fedprofile_reader;
GRANT SELECT ON customers TO fedprofile_reader;
SQL
