#!/bin/bash
# sqlite.sh make DB MIB | query DB MIB - the SQLite case of the corpus.
#   make   a database of about MIB MiB with the sqlite3 CLI: one table of
#          rows of about 1 KiB (contents fixed by the row number) with an
#          index on a second column; once, before the runs
#   query  the sqlite3 CLI with a page cache of twice the database
#          (PRAGMA cache_size), three full scans and a pass of index
#          lookups in a scattered order: after the first scan every page is
#          in SQLite's own cache, a heap of small objects (pages of 4 KiB
#          with their headers), which is what the budget has to hold.
#          Prints the results (compared across modes).
set -eu
OP=${1:?make or query} DB=${2:?database} MIB=${3:?MiB}
ROWS=$((MIB * 1000))
case $OP in
make)
	[ -s "$DB" ] && exit 0
	rm -f "$DB.tmp"
	sqlite3 "$DB.tmp" > /dev/null <<SQL
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $ROWS)
INSERT INTO t SELECT x, (x * 7919) % $ROWS, printf('%08d', x) || substr(hex(zeroblob(500)), 1, 1000 - (x % 97))
FROM c;
CREATE INDEX t_k ON t(k);
SQL
	mv "$DB.tmp" "$DB"
	;;
query)
	sqlite3 -readonly "$DB" <<SQL
PRAGMA cache_size = -$((MIB * 2 * 1024));
SELECT count(*), sum(k), sum(length(v)) FROM t;
SELECT count(*), sum(k), sum(length(v)) FROM t WHERE v LIKE '%1%';
SELECT count(*), max(k), sum(length(v)) FROM t WHERE id % 3 = 1;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $ROWS / 4)
SELECT count(*), sum(length(v)) FROM c JOIN t ON t.k = (c.x * 104729) % $ROWS;
SQL
	;;
*)
	echo "sqlite.sh: make or query" >&2
	exit 2
	;;
esac
