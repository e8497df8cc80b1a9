"""Tests of the web role (run by `corral test` once the test gate lands)."""
