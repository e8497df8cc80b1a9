"""RuntimeAPI against a fake admin socket replaying answers captured from HAProxy 2.6.

The real thing is exercised in tests/engine/test_edge_runtime.py; this file pins the
parsing and the error mapping without starting HAProxy.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.edge.runtime import ProxyCounters, RuntimeAPI, failure_growth, parse_stat
from corral.errors import EngineError, NotFoundError

STATE_HEADER = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port\n"
)
# Captured: "a" up and checked, "b" just taken out of maintenance into drain (UP before any
# check ran), "c" freshly added (maintenance, checks configured but off). "* L7OK": HAProxy
# prefixes the last result with "* " while the next check is running.
STATE = STATE_HEADER + (
    "3 web 1 a 127.0.0.1 2 0 1 1 25 15 3 2 6 0 0 0 - 19001 - 0 0 - - 0\n"
    "3 web 2 b 127.0.0.1 2 8 1 1 0 1 0 1 6 0 0 0 - 19002 - 0 0 - - 0\n"
    "3 web 3 c ::1 0 1 1 1 0 1 0 0 2 0 0 0 - 19003 - 0 0 - - 0\n\n"
)
STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
    "wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,"
    "sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,\n"
    "web,a,0,0,3,4,,10,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,1,0,,1,3,1,,10,,2,0,,1,* L7OK,\n"
    "web,b,0,0,0,0,,0,0,0,,0,,0,0,0,0,DRAIN,0,1,0,0,0,1,0,,1,3,2,,0,,2,0,,0,INI,\n"
    "web,c,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,1,0,,1,3,3,,0,,2,0,,0,,\n\n"
)

# Captured from HAProxy 2.6 after four GETs through a backend with one live server and one
# on a closed port: every request was answered (200), three were redispatched off "dead".
SHOW_STAT = (Path(__file__).with_name("haproxy_show_stat.csv")).read_text()

Answer = str | Callable[[str], str]


class FakeHAProxy:
    """A Unix socket speaking HAProxy's admin protocol, interactive mode included.

    Without ``prompt`` first it answers one command and closes; after ``prompt`` it keeps
    the connection and ends each answer with the prompt, as HAProxy 2.6 does (checked by
    hand: the interactive answer is the one-shot answer followed by ``"> "``).
    """

    def __init__(self, path: str, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.received: list[str] = []
        self.connections = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        interactive = False
        with conn, conn.makefile("rb") as lines:
            for raw in lines:
                line = raw.decode().rstrip("\n")
                if line == "prompt":
                    interactive = True
                    conn.sendall(b"\n> ")
                    continue
                self.received.append(line)
                answer = self.answers.get(line, "Unknown command.\n")
                text = answer(line) if callable(answer) else answer
                conn.sendall((text + ("> " if interactive else "")).encode())
                if not interactive:
                    return

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def sock_path() -> Iterator[str]:
    # Not tmp_path: Unix socket paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="corral-edge-") as tmp:
        yield str(Path(tmp) / "admin.sock")


def _fake(sock_path: str, answers: dict[str, Answer]) -> Iterator[FakeHAProxy]:
    fake = FakeHAProxy(sock_path, answers)
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def haproxy(sock_path: str) -> Iterator[FakeHAProxy]:
    yield from _fake(
        sock_path,
        {
            "show servers state web": STATE,
            "show stat 3 4 -1": STAT,
            "show servers state nope": "Can't find backend.\n\n",
        },
    )


def test_servers_parse_state_and_stat(haproxy: FakeHAProxy, sock_path: str) -> None:
    a, b, c = RuntimeAPI(sock_path).servers("web")
    assert (a.name, a.addr, a.port, a.admin, a.operational) == (
        "a",
        "127.0.0.1",
        19001,
        "ready",
        "up",
    )
    assert (a.sessions, a.check_status, a.status, a.healthy) == (3, "L7OK", "UP", True)
    # UP only by HAProxy's optimism when leaving maintenance: no check passed yet.
    assert (b.admin, b.operational, b.check_passed, b.healthy) == ("drain", "up", False, False)
    assert (c.admin, c.operational, c.checks_enabled, c.addr) == ("maint", "down", False, "::1")
    assert haproxy.received == ["show servers state web", "show stat 3 4 -1"]


def test_a_server_read_while_its_check_runs_keeps_its_last_result(sock_path: str) -> None:
    # HAProxy resets srv_check_result to 0 (unknown) when a check starts and keeps the last
    # srv_check_status (15, L7OKD) until it ends: that server is healthy. One never
    # checked (status 1, INI) with the same unknown result is not; nor is one whose last
    # check failed (17, L7STS).
    rows = {"a": "15 0", "b": "1 0", "c": "17 0"}
    state = STATE_HEADER + "".join(
        f"3 web {i} {name} 127.0.0.1 2 0 1 1 25 {check} 2 6 0 0 0 - 1900{i} - 0 0 - - 0\n"
        for i, (name, check) in enumerate(rows.items(), 1)
    )
    stat_row = "web,{},0,0,0,0,,10,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,1,0,,1,3,{},,10,,2,0,,1,* L7OK,\n"
    stat = STAT.splitlines()[0] + "\n"
    stat += "".join(stat_row.format(name, i) for i, name in enumerate(rows, 1))
    for _ in _fake(sock_path, {"show servers state web": state, "show stat 3 4 -1": stat}):
        healthy = {s.name: s.healthy for s in RuntimeAPI(sock_path).servers("web")}
        assert healthy == {"a": True, "b": False, "c": False}


def test_current_sessions(haproxy: FakeHAProxy, sock_path: str) -> None:
    assert RuntimeAPI(sock_path).current_sessions("web", "a") == 3


def test_missing_server_and_backend(haproxy: FakeHAProxy, sock_path: str) -> None:
    api = RuntimeAPI(sock_path)
    with pytest.raises(NotFoundError):
        api.server("web", "zz")
    with pytest.raises(NotFoundError):
        api.servers("nope")


def test_empty_backend_has_no_servers(sock_path: str) -> None:
    for _ in _fake(sock_path, {"show servers state web": STATE_HEADER + "\n"}):
        assert RuntimeAPI(sock_path).servers("web") == []


def test_commands_and_exact_answers(sock_path: str) -> None:
    answers: dict[str, Answer] = {
        "add server web/n 10.0.0.5:8000 check inter 500ms downinter 20ms fall 2 rise 1": (
            "New server registered.\n\n"
        ),
        "add server web/m [fd00::5]:8000": "New server registered.\n\n",
        "enable health web/n": "\n",
        "set server web/n state drain": "\n",
        "del server web/n": "Server deleted.\n",
    }
    for fake in _fake(sock_path, answers):
        api = RuntimeAPI(sock_path)
        api.add_server("web", "n", "10.0.0.5", 8000, check=True)
        api.add_server("web", "m", "fd00::5", 8000, check=False)
        api.enable_health("web", "n")
        api.set_state("web", "n", "drain")
        api.del_server("web", "n")
        assert fake.received == list(answers)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("Already exists a server with the same name in backend.\n\n", EngineError),
        ("No such backend.\n", NotFoundError),
        ("Permission denied\n", EngineError),
    ],
)
def test_refusals_raise(sock_path: str, answer: str, error: type[EngineError]) -> None:
    for _ in _fake(sock_path, {"add server web/n 10.0.0.5:80": answer}):
        with pytest.raises(error) as info:
            RuntimeAPI(sock_path).add_server("web", "n", "10.0.0.5", 80, check=False)
        assert info.value.stderr == answer.strip()


def test_silent_commands_refuse_any_text(sock_path: str) -> None:
    answers: dict[str, Answer] = {
        "set server web/n state maint": "No such server.\n\n",
        "del server web/n": "Only servers in maintenance mode can be deleted.\n",
    }
    for _ in _fake(sock_path, answers):
        api = RuntimeAPI(sock_path)
        with pytest.raises(NotFoundError):
            api.set_state("web", "n", "maint")
        with pytest.raises(EngineError, match="maintenance"):
            api.del_server("web", "n")


@pytest.mark.parametrize(
    "call",
    [
        lambda api: api.add_server("web", "n", "app.internal", 80, check=True),
        lambda api: api.add_server("web", "n;show info", "10.0.0.1", 80, check=True),
        lambda api: api.add_server("web", "n", "10.0.0.1", 0, check=True),
        lambda api: api.set_state("web", "n", "up"),
        lambda api: api.command("show info;show stat"),
    ],
)
def test_bad_arguments_never_reach_haproxy(
    sock_path: str, call: Callable[[RuntimeAPI], object]
) -> None:
    for fake in _fake(sock_path, {}):
        with pytest.raises(ValueError):
            call(RuntimeAPI(sock_path))
        assert fake.received == []


def test_unreachable_socket_is_an_engine_error(sock_path: str) -> None:
    with pytest.raises(EngineError, match="runtime API"):
        RuntimeAPI(sock_path).command("show info")


def test_silent_socket_times_out(sock_path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen()  # accepts (in the backlog) but never answers
    try:
        with pytest.raises(EngineError):
            RuntimeAPI(sock_path, timeout=0.2).command("show info")
    finally:
        server.close()


def test_drain_and_remove_waits_for_sessions(sock_path: str) -> None:
    sessions = itertools.chain([2, 1], itertools.repeat(0))

    def stat(_: str) -> str:
        row = f"web,a,0,0,{next(sessions)},,,,,,,,,,,,,DRAIN,,,,,,,,,,,,,,,,,,,L7OK,\n"
        return STAT.splitlines(keepends=True)[0] + row

    deletes = iter(["Server still has connections attached to it, cannot remove it.\n"])
    answers: dict[str, Answer] = {
        "set server web/a state drain": "\n",
        "set server web/a state maint": "\n",
        "show servers state web": STATE_HEADER + STATE.splitlines(keepends=True)[2],
        "show stat 3 4 -1": stat,
        "del server web/a": lambda _: next(deletes, "Server deleted.\n"),
    }
    for fake in _fake(sock_path, answers):
        assert RuntimeAPI(sock_path).drain_and_remove("web", "a", drain_timeout=5) is True
        assert fake.received.count("del server web/a") == 2
        assert "shutdown sessions server web/a" not in fake.received
        assert fake.received.index("set server web/a state maint") > fake.received.index(
            "set server web/a state drain"
        )


def test_drain_and_remove_cuts_requests_still_running_after_the_timeout(sock_path: str) -> None:
    def stat(_: str) -> str:  # one request that never ends
        row = "web,a,0,0,1,,,,,,,,,,,,,DRAIN,,,,,,,,,,,,,,,,,,,L7OK,\n"
        return STAT.splitlines(keepends=True)[0] + row

    answers: dict[str, Answer] = {
        "set server web/a state drain": "\n",
        "set server web/a state maint": "\n",
        "shutdown sessions server web/a": "\n",
        "show servers state web": STATE_HEADER + STATE.splitlines(keepends=True)[2],
        "show stat 3 4 -1": stat,
        "del server web/a": "Server deleted.\n",
    }
    for fake in _fake(sock_path, answers):
        started = time.monotonic()
        assert RuntimeAPI(sock_path).drain_and_remove("web", "a", drain_timeout=0.3) is False
        assert 0.3 <= time.monotonic() - started < 2
        order = [
            fake.received.index(c)
            for c in (
                "set server web/a state drain",
                "set server web/a state maint",
                "shutdown sessions server web/a",
                "del server web/a",
            )
        ]
        assert order == sorted(order)


# -- the persistent connection and the shared watcher --------------------------------------


def _state_row(name: str, srv_id: int, healthy: bool) -> str:
    # op_state 2 (up), admin 8 (drain) and a passed check (3) once healthy; else down, unchecked
    op, result = (2, 3) if healthy else (0, 0)
    return (
        f"3 web {srv_id} {name} 127.0.0.1 {op} 8 1 1 0 1 {result} 2 6 0 0 0 - "
        f"{19000 + srv_id} - 0 0 - - 0\n"
    )


def test_one_connection_serves_every_command(haproxy: FakeHAProxy, sock_path: str) -> None:
    with RuntimeAPI(sock_path) as api:
        for _ in range(20):
            assert len(api.servers("web")) == 3
        assert api.channel.round_trips == 40
    assert haproxy.connections == 1


def test_prepare_batches_the_checks_and_the_drain(sock_path: str) -> None:
    add = "add server web/n 10.0.0.5:8000 check inter 500ms downinter 20ms fall 2 rise 1"
    answers: dict[str, Answer] = {
        add: "New server registered.\n\n",
        "enable health web/n": "\n",
        "set server web/n state drain": "\n",
    }
    for fake in _fake(sock_path, answers):
        with RuntimeAPI(sock_path) as api:
            api.prepare("web", "n", "10.0.0.5", 8000)
            assert api.channel.round_trips == 2  # add alone, then checks + drain together
        assert fake.received == list(answers)


def test_prepare_sets_the_servers_check_path_before_its_checks_start(sock_path: str) -> None:
    """Each server is checked on its own release's path (issue 10); ';' is escaped, not a
    second command, and an earlier entry of the same name goes first."""
    add = "add server web/n 10.0.0.5:8000 check inter 500ms downinter 20ms fall 2 rise 1"
    answers: dict[str, Answer] = {
        add: "New server registered.\n\n",
        "del map /m/checks.map n": "Key not found.\n\n",
        "add map /m/checks.map n /ready\\;v=2?full=1": "\n",
        "enable health web/n": "\n",
        "set server web/n state drain": "\n",
    }
    for fake in _fake(sock_path, answers):
        with RuntimeAPI(sock_path, check_map="/m/checks.map") as api:
            api.prepare("web", "n", "10.0.0.5", 8000, check_path="/ready;v=2?full=1")
            assert api.channel.round_trips == 2
        assert fake.received == list(answers)


@pytest.mark.parametrize("path", ["healthz", "/a b", "/a\\b", "/a\nb"])
def test_a_bad_check_path_never_reaches_haproxy(sock_path: str, path: str) -> None:
    for fake in _fake(sock_path, {}):
        with pytest.raises(ValueError, match="check path"):
            RuntimeAPI(sock_path, check_map="/m/checks.map").set_check_path("n", path)
        assert fake.received == []


def test_an_unescaped_semicolon_is_still_refused(sock_path: str) -> None:
    with pytest.raises(ValueError, match="one command at a time"):
        RuntimeAPI(sock_path).command("show info; shutdown sessions server web/n")


def test_a_taken_name_is_never_touched(sock_path: str) -> None:
    """A batch is not a transaction: nothing may follow an add server that failed."""
    add = "add server web/n 10.0.0.5:8000 check inter 500ms downinter 20ms fall 2 rise 1"
    answers: dict[str, Answer] = {add: "Already exists a server with the same name.\n\n"}
    for fake in _fake(sock_path, answers):
        with pytest.raises(EngineError, match="Already exists"):
            RuntimeAPI(sock_path).prepare("web", "n", "10.0.0.5", 8000)
        assert fake.received == [add]


def test_batch_answers_come_back_in_order(sock_path: str) -> None:
    answers: dict[str, Answer] = {
        "set server web/a state ready": "\n",
        "set server web/b state drain": "No such server.\n\n",
        "del server web/c": "Server deleted.\n",
    }
    for _ in _fake(sock_path, answers):
        api = RuntimeAPI(sock_path)
        assert api.commands(list(answers)) == ["", "No such server.", "Server deleted."]
        assert api.channel.round_trips == 1
        with pytest.raises(NotFoundError, match="web/b"):
            api.set_states("web", [("a", "ready"), ("b", "drain")])


def test_a_connection_closed_while_idle_is_opened_again(
    haproxy: FakeHAProxy, sock_path: str
) -> None:
    api = RuntimeAPI(sock_path)
    assert len(api.servers("web")) == 3
    assert api.channel._sock is not None
    # What HAProxy does after "stats timeout": it closes the idle connection.
    api.channel._sock.shutdown(socket.SHUT_RDWR)
    assert len(api.servers("web")) == 3
    assert haproxy.connections == 2


def test_connect_retries_while_the_socket_is_busy(
    haproxy: FakeHAProxy, sock_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EAGAIN (the accept queue is full) and ECONNREFUSED are retried with back-off."""
    import corral.edge.channel as channel

    failures = iter([errno.EAGAIN, errno.ECONNREFUSED, errno.EAGAIN])
    real = socket.socket

    class Busy(real):  # type: ignore[misc,valid-type]
        def connect(self, address: object) -> None:
            code = next(failures, None)
            if code is not None:
                raise OSError(code, os.strerror(code))
            super().connect(address)

    monkeypatch.setattr(channel.socket, "socket", Busy)
    assert len(RuntimeAPI(sock_path).servers("web")) == 3
    assert next(failures, None) is None  # every failure was met and retried


def test_connect_gives_up_once_its_timeout_is_spent(
    sock_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import corral.edge.channel as channel

    class Full(socket.socket):
        def connect(self, address: object) -> None:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(channel.socket, "socket", Full)
    started = time.monotonic()
    with pytest.raises(EngineError, match="Resource temporarily unavailable"):
        RuntimeAPI(sock_path, timeout=0.3).command("show info")
    assert 0.1 <= time.monotonic() - started < 1.0  # retried, but not past its timeout


def test_many_waiters_share_one_look_per_tick(sock_path: str) -> None:
    """50 servers waited on at once cost what one does: one look per tick, not 50."""
    count, ready_after = 50, 0.3
    started = time.monotonic()

    def state(_: str) -> str:
        healthy = time.monotonic() - started >= ready_after
        rows = "".join(_state_row(f"s{i}", i + 1, healthy) for i in range(count))
        return STATE_HEADER + rows + "\n"

    for fake in _fake(sock_path, {"show servers state web": state}):
        api = RuntimeAPI(sock_path, tick=0.01)
        results: list[bool] = []

        def wait(name: str, api: RuntimeAPI = api, results: list[bool] = results) -> None:
            results.append(api.wait_healthy("web", name, 5))

        threads = [threading.Thread(target=wait, args=(f"s{i}",)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        assert results == [True] * count
        looks = fake.received.count("show servers state web")
        assert looks == api.watcher.looks
        assert looks <= elapsed / 0.01 + 2  # one per tick at most, whatever the count
        assert "show stat 3 4 -1" not in fake.received  # health needs no session counts
        assert fake.connections == 1


def test_waiting_on_a_missing_server_raises(haproxy: FakeHAProxy, sock_path: str) -> None:
    with pytest.raises(NotFoundError, match="web/zz"):
        RuntimeAPI(sock_path).wait_healthy("web", "zz", 1)


def test_wait_healthy_times_out(haproxy: FakeHAProxy, sock_path: str) -> None:
    started = time.monotonic()
    assert RuntimeAPI(sock_path).wait_healthy("web", "b", 0.2) is False  # b: no check passed
    assert 0.2 <= time.monotonic() - started < 1.0


def test_a_look_from_before_the_question_never_answers_it(sock_path: str) -> None:
    """After ``set server ... drain`` only a later look may say the server is idle."""
    looks = iter([1, 0])

    def stat(_: str) -> str:
        row = f"web,a,0,0,{next(looks, 0)},,,,,,,,,,,,,DRAIN,,,,,,,,,,,,,,,,,,,L7OK,\n"
        return STAT.splitlines(keepends=True)[0] + row

    answers: dict[str, Answer] = {
        "show servers state web": STATE_HEADER + STATE.splitlines(keepends=True)[2],
        "show stat 3 4 -1": stat,
    }
    for fake in _fake(sock_path, answers):
        api = RuntimeAPI(sock_path)
        assert api._wait_idle("web", "a", 0) is False  # one fresh look (1 session), no wait
        assert api._wait_idle("web", "a", 5) is True
        assert fake.received.count("show stat 3 4 -1") == 2


def test_a_bad_name_fails_its_own_waiter_only(haproxy: FakeHAProxy, sock_path: str) -> None:
    api = RuntimeAPI(sock_path)
    with pytest.raises(ValueError):
        api.wait_healthy("web;show info", "a", 1)
    assert haproxy.received == []  # refused before it was watched, so no look carries it
    assert api.wait_healthy("web", "a", 1) is True


def test_counters_read_every_row_typed(sock_path: str) -> None:
    for fake in _fake(sock_path, {"show stat": SHOW_STAT.rstrip("\n") + "\n\n"}):
        rows = RuntimeAPI(sock_path).counters()
        assert fake.received == ["show stat"]
    assert [(r.proxy, r.name, r.kind) for r in rows] == [
        ("fe_web", "FRONTEND", "frontend"),
        ("web", "live", "server"),
        ("web", "dead", "server"),
        ("web", "BACKEND", "backend"),
    ]
    front, live, dead, back = rows
    assert (front.requests, front.http_5xx, front.failures) == (4, 0, {})
    assert front.retries == 0  # a column HAProxy leaves empty for frontends reads as 0
    assert (live.requests, live.sessions, live.failures) == (4, 4, {})
    # The clients saw four 200s; only the counters show the dead server and the redispatches.
    assert dead == ProxyCounters("web", "dead", "server", 0, 0, 0, 3, 0, 0, 3)
    assert dead.failures == {"wredis": 3} and back.failures == {"wredis": 3}
    assert back.key == ("web", "BACKEND")


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "Unknown command.",
        "# pxname,svname,type,econ\nweb,a,2",  # a short row
        "# pxname,svname,type,econ\nweb,a,2,many",  # not a number
        "# pxname,svname,type,econ\nweb,a,9,0",  # an unknown kind of row
    ],
)
def test_counters_refuse_a_malformed_answer(answer: str) -> None:
    with pytest.raises(EngineError, match="unexpected answer"):
        parse_stat("show stat", answer)


def _row(name: str, econ: int = 0, wredis: int = 0, kind: str = "server") -> ProxyCounters:
    return ProxyCounters("web", name, kind, econ, 0, 0, wredis, 0, 0, 0)  # type: ignore[arg-type]


def test_failure_growth_compares_two_readings() -> None:
    first = {r.key: r for r in (_row("a", econ=2), _row("BACKEND", wredis=1, kind="backend"))}
    last = {
        r.key: r
        for r in (
            _row("a", econ=2),  # no growth: not reported
            _row("BACKEND", wredis=4, kind="backend"),
            _row("new", wredis=1),  # added meanwhile: from zero
        )
    }
    assert failure_growth(first, last) == {
        ("web", "BACKEND"): {"wredis": 3},
        ("web", "new"): {"wredis": 1},
    }
    assert failure_growth(last, last) == {}
    # HAProxy restarted: the counter went down, its new value is all growth
    assert failure_growth({("web", "a"): _row("a", econ=5)}, {("web", "a"): _row("a", econ=1)}) == {
        ("web", "a"): {"econ": 1}
    }


def test_a_server_that_cut_its_answer_counts_as_a_failure() -> None:
    # srv_abrt: HAProxy had begun to pass the answer on, so the client got a broken
    # response and no 5xx was counted; eint: HAProxy's own errors.
    header = "# pxname,svname,type,econ,eresp,srv_abrt,eint"
    [row] = parse_stat("show stat", f"{header}\nweb,a,2,0,0,1,0")
    assert row.failures == {"srv_abrt": 1}
    [row] = parse_stat("show stat", f"{header}\nweb,a,2,0,0,0,2")
    assert row.failures == {"eint": 2}


def test_after_a_reload_only_the_new_workers_own_check_counts(sock_path: str) -> None:
    # Captured from HAProxy 2.6 right after a reload with a server-state file: "a" was
    # already checked by the new worker (HTTP 404 now: still UP, going down), "b" still shows
    # the old worker's L7OK with code 0. "c" was checked (200), "d" is a TCP check (no code).
    rows = {"a": ("17 2", "UP 1/2", "L7STS", "404"), "b": ("15 3", "UP", "L7OK", "0")}
    rows |= {"c": ("15 3", "UP", "L7OK", "200"), "d": ("6 3", "UP", "L4OK", "")}
    header = STAT.splitlines()[0].removesuffix(",") + ",check_code,\n"
    state = STATE_HEADER + "".join(
        f"3 web {i} {name} 127.0.0.1 2 0 1 1 25 {check} 2 6 0 0 0 - 1900{i} - 0 0 - - 0\n"
        for i, (name, (check, *_)) in enumerate(rows.items(), 1)
    )
    stat = header + "".join(
        f"web,{name},0,0,0,0,,10,0,0,,0,,0,0,0,0,{status},1,1,0,0,0,1,0,,1,3,{i},,10,,2,0,,1,"
        f"{check_status},{code},\n"
        for i, (name, (_, status, check_status, code)) in enumerate(rows.items(), 1)
    )
    for _ in _fake(sock_path, {"show servers state web": state, "show stat 3 4 -1": stat}):
        servers = {s.name: s for s in RuntimeAPI(sock_path).servers("web")}
        seen = {n: (s.healthy, s.checked_here) for n, s in servers.items()}
        assert seen == {
            "a": (False, True),
            "b": (True, False),
            "c": (True, True),
            "d": (True, True),
        }
