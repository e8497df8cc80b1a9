"""The kinds of spec values: what each accepts, how it normalises, what it refuses and why.

The bad specs in ``specs/bad`` show that each refusal reaches the user located; these
tables show where each kind draws its lines.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.spec import kinds

Check = Callable[[str], str]


def refuses(check: Check, value: str) -> str:
    with pytest.raises(ValueError) as caught:
        check(value)
    return str(caught.value)


# --- paths inside the image ----------------------------------------------------------


@pytest.mark.parametrize("value", ["/", "/srv/app", "/var/lib/postgresql/data", "/a/b.c_d-e+f@g"])
def test_image_paths_accepted(value: str) -> None:
    assert kinds.image_path(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("srv/app", "absolute path"),
        ("/srv\nUSER root", "U+000A"),
        ("/srv\x00x", "U+0000"),
        ("/srv/\u202eevil", "U+202E"),
        ("/srv//app", "no '//'"),
        ("/srv/app/", "no trailing '/'"),
        ("/srv/./app", "no '.' segments"),
        ("/srv/../etc", "no '..' segments"),
        ("/srv/$HOME", "'$' is not allowed"),
        ("/srv/a\\b", "'\\\\' is not allowed"),
        ("/srv/a b", "' ' is not allowed"),
        ("/srv/caf\u00e9", "'é' is not allowed"),
        ("/" + "a" * 256, "at most 255 characters"),
        ("/a" * 2049, "at most 4096 characters"),
    ],
)
def test_image_paths_refused(value: str, expected: str) -> None:
    assert expected in refuses(kinds.image_path, value)


def test_a_copy_destination_may_name_a_folder() -> None:
    assert kinds.copy_dest("/srv/") == "/srv/"
    assert kinds.copy_dest("/") == "/"
    assert "no '//'" in refuses(kinds.copy_dest, "/srv//")


@pytest.mark.parametrize("value", ["/data", "/var/lib/app", "/srv/x", "/etc/letsencrypt", "/tmp/x"])
def test_mount_paths_accepted(value: str) -> None:
    assert kinds.mount_path(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/", "would hide the system's own files"),
        ("/usr", "would hide"),
        ("/etc", "would hide"),
        ("/var", "would hide"),
        ("/proc", "/proc is the kernel's"),
        ("/sys/fs/cgroup", "/sys is the kernel's sysfs"),
        ("/dev/shm", "/dev holds the container's devices"),
        ("/run", "/run is a tmpfs corral mounts"),
        ("/run/secrets", "/run is a tmpfs"),
        ("/tmp", "it is a tmpfs corral mounts"),
        ("/data:rw", "':' is not allowed"),
        ("/data,ro", "',' is not allowed"),
    ],
)
def test_mount_paths_refused(value: str, expected: str) -> None:
    assert expected in refuses(kinds.mount_path, value)


def test_a_path_that_only_starts_like_a_system_tree_is_fine() -> None:
    assert kinds.mount_path("/procedures") == "/procedures"
    assert kinds.mount_path("/devices") == "/devices"


# --- paths on the host ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["app.py", "app/", ".", "./app", "a/b/c", "café/x", "a..b"])
def test_host_paths_accepted(value: str) -> None:
    assert kinds.host_path(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/etc/shadow", "not an absolute path"),
        ("/", "not an absolute path"),
        ("..", "'..' is not allowed"),
        ("../x", "'..' is not allowed"),
        ("app/../../x", "'..' is not allowed"),
        ("app\n", "U+000A"),
        ("a\x00", "U+0000"),
        ("a" * 4097, "at most 4096 characters"),
    ],
)
def test_host_paths_refused(value: str, expected: str) -> None:
    assert expected in refuses(kinds.host_path, value)


@pytest.mark.parametrize("value", ["state.db", "/var/lib/corral/x.db", "../state.db", "~/x.db"])
def test_state_paths_accepted(value: str) -> None:
    assert kinds.state_path(value) == value


@pytest.mark.parametrize(("value", "expected"), [("", "leave 'state' out"), ("a\tb", "U+0009")])
def test_state_paths_refused(value: str, expected: str) -> None:
    assert expected in refuses(kinds.state_path, value)


# --- text ----------------------------------------------------------------------------


def test_arguments_may_hold_anything_but_nul() -> None:
    assert kinds.no_nul("line one\nline 'two' $HOME ;") == "line one\nline 'two' $HOME ;"
    assert "character 3" in refuses(kinds.no_nul, "ab\x00")


# --- capabilities --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("NET_BIND_SERVICE", "NET_BIND_SERVICE"),
        ("CAP_NET_BIND_SERVICE", "NET_BIND_SERVICE"),
        ("cap_net_raw", "NET_RAW"),
        ("chown", "CHOWN"),
    ],
)
def test_capabilities_normalised(value: str, normal: str) -> None:
    assert kinds.capability(value) == normal


@pytest.mark.parametrize("name", sorted(kinds.REFUSED_CAPABILITIES))
def test_host_reaching_capabilities_refused(name: str) -> None:
    assert f"capability {name} is refused" in refuses(kinds.capability, name)
    assert f"capability {name} is refused" in refuses(kinds.capability, f"CAP_{name}")


def test_refused_capabilities_are_real_ones() -> None:
    assert set(kinds.REFUSED_CAPABILITIES) - {"ALL"} <= kinds.LINUX_CAPABILITIES
    assert len(kinds.LINUX_CAPABILITIES) == 41  # CAP_CHOWN (0) to CAP_CHECKPOINT_RESTORE (40)


@pytest.mark.parametrize("value", ["FLY", "CAP_", "", "NET BIND", "NET_BIND_SERVICE\n", "x" * 100])
def test_unknown_capabilities_refused(value: str) -> None:
    assert "expected a Linux capability" in refuses(kinds.capability, value)


def test_a_capability_named_twice_is_refused() -> None:
    assert kinds.distinct_capabilities(("NET_RAW", "CHOWN")) == ("NET_RAW", "CHOWN")
    with pytest.raises(ValueError, match="NET_RAW is listed twice"):
        kinds.distinct_capabilities(("NET_RAW", "NET_RAW"))


# --- image references ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "x",
        "debian",
        "localhost/base:12",
        "docker.io/library/debian:bookworm-slim",
        "registry.example.com:5000/team/app_v2:1.0.0-rc.1",
        "[::1]:5000/app",
        "app@sha256:" + "a" * 64,
        "app:latest@sha256:" + "0123456789abcdef" * 4,
        "a__b.c--d/e",
        "f" * 64,
    ],
)
def test_image_references_accepted(value: str) -> None:
    assert kinds.image_reference(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("--privileged", "cannot start with '-'"),
        ("-x", "cannot start with '-'"),
        ("Local/Base", "expected an image reference"),
        ("app:", "expected an image reference"),
        ("app:tag with space", "expected an image reference"),
        ("app\n", "expected an image reference"),
        ("app@sha256:short", "expected an image reference"),
        ("a" * 256, "at most 255 characters in the name"),
        ("a:" + "t" * 129, "expected an image reference"),
        ("x/" * 300 + "x", "expected an image reference"),
    ],
)
def test_image_references_refused(value: str, expected: str) -> None:
    assert expected in refuses(kinds.image_reference, value)


# --- URL paths, sizes, addresses -----------------------------------------------------


@pytest.mark.parametrize("value", ["/", "/healthz", "/ready?full=1&x=%20y", "/a:b@c/(d)*+,;="])
def test_url_paths_accepted(value: str) -> None:
    assert kinds.url_path(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("healthz", "starting with '/'"),
        ("/health check", "RFC 3986"),
        ("/x\r\nHost: evil", "RFC 3986"),
        ("/it's", "RFC 3986"),
        ("/$HOME", "RFC 3986"),
        ("/x#frag", "RFC 3986"),
        ("/%zz", "RFC 3986"),
        ("/caf\u00e9", "RFC 3986"),
        ("/" + "a" * 1024, "at most 1024 characters"),
    ],
)
def test_url_paths_refused(value: str, expected: str) -> None:
    assert expected in refuses(kinds.url_path, value)


@pytest.mark.parametrize("value", ["6m", "512m", "2g", "1024g", "65536k", str(6 * 1024**2)])
def test_memory_accepted(value: str) -> None:
    assert kinds.memory(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5m", "from 6m to 1024g"),
        ("1025g", "from 6m to 1024g"),
        ("0", "from 6m to 1024g"),
        ("9" * 40 + "g", "such as '512m'"),
        ("512M", "such as '512m'"),
        ("\u0665\u0661\u0662m", "such as '512m'"),
        ("512 m", "such as '512m'"),
    ],
)
def test_memory_refused(value: str, expected: str) -> None:
    assert expected in refuses(kinds.memory, value)


@pytest.mark.parametrize(
    ("value", "normal"),
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"), ("10.1.2.3", "10.1.2.3")],
)
def test_edge_addresses_accepted(value: str, normal: str) -> None:
    assert kinds.edge_address(value) == normal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("here", "expected an IP address"),
        ("999.1.1.1", "expected an IP address"),
        ("127.000.000.001", "expected an IP address"),
        ("\u0661\u0662\u0667.0.0.1", "expected an IP address"),
        ("1.2.3", "expected an IP address"),
        ("::1", "IPv4 addresses only"),
        ("224.0.0.1", "multicast or reserved"),
        ("255.255.255.255", "multicast or reserved"),
    ],
)
def test_edge_addresses_refused(value: str, expected: str) -> None:
    assert expected in refuses(kinds.edge_address, value)


# --- whatever the text, a kind answers with the value or a ValueError ------------------

KINDS: list[Check] = [
    kinds.printable,
    kinds.no_nul,
    kinds.image_path,
    kinds.copy_dest,
    kinds.mount_path,
    kinds.host_path,
    kinds.state_path,
    kinds.capability,
    kinds.image_reference,
    kinds.url_path,
    kinds.memory,
    kinds.edge_address,
]


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=300) | st.text("/.-:a1$%\\\x00\n ", max_size=60))
def test_kinds_answer_any_text(value: str) -> None:
    for check in KINDS:
        try:
            assert isinstance(check(value), str)
        except ValueError as exc:
            assert str(exc)
