"""Tests of the api role (run by `corral test` once the test gate lands)."""
