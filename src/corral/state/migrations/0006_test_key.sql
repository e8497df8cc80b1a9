-- 0006_test_key: a test run is bound to what was tested, not only to the image.
--
-- `test_key` is a hash of the role's test files and of the settings its test environment
-- used (see corral.testing.key). The deploy gate looks up the newest run of the exact
-- (image_digest, test_key) and accepts it only if it passed: a new test file or a changed
-- setting makes a new key, for which nothing has passed yet. Runs recorded before this
-- column existed get '' and so match no key: the roles they tested are tested again.

ALTER TABLE test_runs ADD COLUMN test_key TEXT NOT NULL DEFAULT '';

CREATE INDEX test_runs_by_key ON test_runs (fleet, role, image_digest, test_key, id);
