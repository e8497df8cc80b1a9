-- 0014_test_key_parts: a short hash of each part of a run's test key.
--
-- JSON text, `{"run": "<16 hex>", "tests/web/test_a.py": "...", ...}` (corral.testing.key):
-- when the gate finds no run for today's key, it names the parts that changed since the
-- last run instead of "its test files or test settings changed". Runs recorded before
-- hold `{}`: the gate then says what it said before.

ALTER TABLE test_runs ADD COLUMN key_parts TEXT NOT NULL DEFAULT '{}';
