#!/bin/sh
# The db role's backup commands, run by corral in a throwaway container of this image on
# the fleet network (never inside the live instance). HOST is the server's address.
#   dump HOST     a custom-format pg_dump of the postgres database, on standard output
#   restore HOST  that dump, from standard input, into the (fresh) server at HOST
#   check HOST    the restored database answers and holds the app's table
# The password comes from the DB_PASSWORD secret, handed over as PostgreSQL's own
# variable: never an argument.
set -eu
BIN=/usr/lib/postgresql/15/bin
action=$1
host=$2
PGPASSWORD=$DB_PASSWORD
export PGPASSWORD
case "$action" in
    dump) exec "$BIN/pg_dump" -h "$host" -U postgres -d postgres --format=custom ;;
    restore) exec "$BIN/pg_restore" -h "$host" -U postgres -d postgres --clean --if-exists \
        --no-owner --exit-on-error ;;
    check) exec "$BIN/psql" -X -h "$host" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc \
        "SELECT count(*) FROM rows" ;;
    *) echo "backup.sh: unknown action $action" >&2; exit 2 ;;
esac
