-- 0004_release_outcomes for PostgreSQL: 0002's variant already made these tables.
SELECT 1;
