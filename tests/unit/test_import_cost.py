"""Every corral command starts a Python process: what it imports at start it pays each
time (the engine tests run the CLI hundreds of times; CI time doubled once that way)."""

from __future__ import annotations

import json
import subprocess
import sys

# Modules only some commands need, each slow to import (CycloneDX's validator compiles a
# grammar at import: 1-4 s on this machine; PostgreSQL's driver and SQLAlchemy dialect:
# 0.3-0.5 s, for a state that is not PostgreSQL).
LAZY = ("cyclonedx", "jsonschema", "psycopg", "sqlalchemy.dialects.postgresql")


def test_starting_the_cli_loads_no_module_only_some_commands_need() -> None:
    code = (
        "import json, sys; import corral.cli.main; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({LAZY!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
