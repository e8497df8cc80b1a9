#!/bin/sh
# Starts PostgreSQL 15 on the data volume as the postgres user, on a read-only root.
#
# - First start (empty volume): initdb with the password from the DB_PASSWORD secret.
# - Every start: the password is set again from the secret (so a new value takes effect
#   when the instance is replaced), over the local socket once the server answers; the
#   value goes to psql's input, never its arguments.
# - Sockets go to /tmp: /run is a root-owned tmpfs on corral's instances.
# - SIGTERM (what `podman stop` sends) becomes a fast shutdown: a "smart" one would wait
#   for every client to disconnect, then be killed, and the next start would recover.
set -eu

BIN=/usr/lib/postgresql/15/bin
: "${PGDATA:?PGDATA is not set}"
: "${DB_PASSWORD:?the DB_PASSWORD secret is not set}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    umask 077
    pwfile=$(mktemp)
    printf '%s\n' "$DB_PASSWORD" > "$pwfile"
    "$BIN/initdb" --pgdata="$PGDATA" --username=postgres --pwfile="$pwfile" \
        --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
    rm -f "$pwfile"
fi

"$BIN/postgres" -D "$PGDATA" \
    -c listen_addresses='*' \
    -c unix_socket_directories=/tmp \
    -c hba_file=/srv/db/pg_hba.conf \
    -c log_connections=off &
server=$!
trap 'kill -INT "$server" 2>/dev/null' TERM INT

until "$BIN/pg_isready" -q -h /tmp; do
    kill -0 "$server" 2>/dev/null || break
    sleep 0.05
done
# A quote in the password is doubled: the value is data inside one SQL string literal.
quoted=$(printf '%s' "$DB_PASSWORD" | sed "s/'/''/g")
printf "ALTER ROLE postgres PASSWORD '%s';\n" "$quoted" \
    | "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h /tmp -d postgres > /dev/null \
    || echo "start.sh: could not set the password from DB_PASSWORD" >&2
# wait returns early when a signal arrives; wait again for the server to finish.
status=0
wait "$server" || status=$?
if kill -0 "$server" 2>/dev/null; then
    status=0
    wait "$server" || status=$?
fi
exit "$status"
