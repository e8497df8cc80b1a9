"""Why a smoke test failed, in words an operator can act on.

"smoke test failed: test_x" said which test, not why: the failure keeps each failed
test's own text (pytest's assertion message and its ``E`` lines, or the HTTP answer a
test quoted) and the last log lines of the role's instances, which is where a server
says what went wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from corral.errors import DeployError
from corral.testing.runner import CheckResult

INSTANCE_LOG_LINES = 10  # of each instance of the role, kept with the failure
FAILED = ("failed", "error")


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` (a check's message can span lines)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def smoke_failure(
    role: str,
    checks: Sequence[CheckResult],
    log_tail: str,
    instance_logs: Mapping[str, str],
) -> DeployError:
    """The DeployError of a failed smoke test of ``role``.

    Its message names each failed test with the first line of its reason; ``log`` holds
    every failed test's whole reason, then each instance's last log lines (``name: line``);
    ``checks`` the failed checks as data. Without a failed check (pytest itself failed),
    the last lines of pytest's output stand in.
    """
    failed = [c for c in checks if c.outcome in FAILED]
    summary = "; ".join(f"{c.name}: {first_line(c.message) or c.outcome}" for c in failed)
    log = [f"{c.name}: {line}" for c in failed for line in c.message.splitlines() if line]
    if not failed:
        summary = first_line("\n".join(reversed(log_tail.splitlines()))) or "pytest failed"
        log = log_tail.splitlines()[-20:]
    for name, text in sorted(instance_logs.items()):
        log += [f"{name}: {line}" for line in text.splitlines()[-INSTANCE_LOG_LINES:]]
    return DeployError(
        f"role {role}: smoke test failed: {summary}",
        role=role,
        log=log,
        checks=[c.to_dict() for c in failed],
    )
