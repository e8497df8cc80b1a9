"""Break-glass and chaos on Podman, with `corral watch` running (issue 13, deliverables 3
and 4): a break-glass shell on a terminal runs as the instance's user on its read-only
root and its instance is replaced after; a break-glass session (a command, no terminal)
is audited before it opens, its instance is left alone
while it lasts (the watcher sees the exec) and replaced when it ends, new first, with no
request failed; then `corral chaos` kills an instance every few seconds under load and the
watcher replaces each, with no request failed and nothing on the edge's own counters."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

from tests.engine.helpers import CORRAL, Fleet, containers, until, watching


def _running(fleet: Fleet) -> list[str]:
    return sorted(
        c["Names"][0]
        for c in containers(fleet.name)
        if c["Labels"].get("io.corral.role") == "web" and c["State"] == "running"
    )


def _on_a_terminal(argv: list[str], typed: str, timeout: float = 120) -> tuple[str, int]:
    """Run ``argv`` on a pseudo-terminal, type ``typed`` into it; what it showed, its exit."""
    main, child = pty.openpty()
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    time.sleep(3)  # the shell is up
    os.write(main, typed.encode())
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child side closed: everything was read
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    os.close(main)
    return shown.decode(errors="replace"), proc.wait(timeout=30)


def test_break_glass_then_chaos_under_load_with_watch_running(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.write("v1", replicas=3)
    fleet.spec.write_text(
        fleet.spec.read_text().replace(
            "deploy: {strategy: rolling,", "deploy: {strategy: rolling, max_unavailable: 1,"
        )
    )
    fleet.deploy()
    first = _running(fleet)
    assert len(first) == 3
    with watching(fleet.spec, settle=3) as watch:
        # -- break-glass on a terminal: /bin/sh as the instance's user, then replaced.
        typed = "id -u; echo made-$((20+22)); touch /etc/x || echo read-only; exit 3\n"
        out, code = _on_a_terminal(
            [*CORRAL, "-f", str(fleet.spec), "break-glass", first[2], "--reason", "tty"], typed
        )
        assert code == 0, out
        assert "made-42" in out and "read-only" in out and f"{first[2]} replaced" in out, out
        assert "ended (3)" in out, out
        before = _running(fleet)
        assert len(before) == 3 and first[2] not in before

        # -- break-glass: a command instead of a terminal; the session lasts 4 s.
        script = "echo inside; id -u; touch /tmp/x 2>/dev/null && echo tmp-ok; sleep 4"
        session = subprocess.Popen(
            [*CORRAL, "-f", str(fleet.spec), "break-glass", before[0], "--reason",
             "engine test", "--time-limit", "60s", "--command", f"sh -c '{script}'"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3)  # the watcher saw the exec long ago (its passes are 1 s apart)
        assert before[0] in _running(fleet), "burned mid-session"
        with fleet.load(clients=2) as load:
            out, err = session.communicate(timeout=120)
            assert session.returncode == 0, out + err
        assert watch.poll() is None
        load.assert_no_failures()
        lines = out.splitlines()
        assert lines[0] == "inside" and lines[1] != "0", out  # not root
        assert f"{before[0]} replaced" in out
        after = _running(fleet)
        assert len(after) == 3 and before[0] not in after
        audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
        glass = [(e["action"], e["outcome"]) for e in audit if e["target"] == before[0]]
        tty = [(e["action"], e["outcome"]) for e in audit if e["target"] == first[2]]
        assert tty[:3] == [("break-glass", "opened"), ("break-glass", "closed"), ("burn", "ok")]
        assert glass[:3] == [
            ("break-glass", "opened"),
            ("break-glass", "closed"),
            ("burn", "ok"),
        ], glass
        opened = next(e for e in audit if e["action"] == "break-glass" and e["target"] == before[0])
        assert opened["details"]["reason"] == "engine test" and "@" in opened["details"]["who"]
        burn = next(e for e in audit if e["action"] == "burn" and e["target"] == before[0])
        assert "break-glass by" in burn["details"]["reason"], burn

        # -- chaos: an instance every 3 s for 15 s, through the edge under load.
        with fleet.load(clients=4) as load:
            proc = fleet.corral(
                "--json", "chaos", "web", "--interval", "3", "--duration", "15", "--seed", "7",
                "--drain-first",
            )  # fmt: skip
            chaos = json.loads(proc.stdout)
            until(lambda: len(_running(fleet)) == 3, 30)
            time.sleep(1)
        killed = [k["instance"] for k in chaos["kills"]]
        print(f"chaos: {len(killed)} kills, {load.total} requests, outcomes {dict(load.outcomes)}")
        load.assert_no_failures()
        assert len(killed) >= 3 and chaos["errors"] == [], chaos
        assert not set(killed) & set(_running(fleet))
    audit = json.loads(fleet.corral("audit", "--json", "--limit", "500").stdout)["audit"]
    assert {e["target"] for e in audit if e["action"] == "chaos-kill"} == set(killed)
    burned = {e["target"] for e in audit if e["action"] == "burn"}
    assert set(killed) <= burned
