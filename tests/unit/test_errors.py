"""corral's errors: one tree, typed fields (no bag of details), one JSON shape per kind,
and no secret left in any of their texts once scrubbed."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from corral import engines, errors
from corral.deploy.outcome import ReleaseFailed, as_deploy_error
from corral.engines import base
from corral.errors import (
    BuildError,
    CorralError,
    DeployError,
    Diagnostic,
    EngineError,
    GateError,
    LockedError,
    MissingToolError,
    NotFoundError,
    NotSupportedError,
    SpecError,
    StateError,
    UsageError,
)
from corral.scrub import Scrubber

ERRORS = [
    obj
    for obj in vars(errors).values()
    if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
]
SECRET = "s3cr3t-value"


def test_every_error_is_under_the_root_and_drawn_in_the_tree() -> None:
    assert {e.__name__ for e in ERRORS} >= {"NotSupportedError", "LockedError", "DeployError"}
    for error in [*ERRORS, ReleaseFailed]:
        assert issubclass(error, CorralError)
        assert error.__name__ in (errors.__doc__ or "")  # the docstring's drawing names it
    # the engines' "cannot do this" is the same class, not a second one beside the tree
    assert base.NotSupportedError is engines.NotSupportedError is NotSupportedError
    assert issubclass(NotSupportedError, EngineError)


def test_kinds_are_distinct() -> None:
    kinds = [e.kind for e in [*ERRORS, ReleaseFailed] if e is not ReleaseFailed]
    assert len(kinds) == len(set(kinds))


def test_fields_are_typed_attributes_not_a_bag() -> None:
    error = DeployError("role web: down", role="web", reason="HTTP 500", log=["a", "b"])
    assert (error.role, error.reason, list(error.log)) == ("web", "HTTP 500", ["a", "b"])
    assert not hasattr(error, "details")
    assert str(error) == "role web: down" == error.message
    with pytest.raises(TypeError):
        DeployError("x", colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        EngineError("x", ["podman", "ps"])  # type: ignore[misc]  # fields are keyword-only


@pytest.mark.parametrize(
    ("error", "fields"),
    [
        (UsageError("no role called x"), {}),
        (MissingToolError("podman", "apt-get install podman"), {"tool": "podman"}),
        (
            EngineError("podman rm failed", command=["podman", "rm", "x"], stderr="busy"),
            {"command": ["podman", "rm", "x"], "stderr": "busy", "log": [], "path": None},
        ),
        (NotFoundError("no server web/web-1", name="web/web-1"), {"name": "web/web-1"}),
        (
            NotSupportedError("fake cannot exec", engine="fake", capability="exec"),
            {"engine": "fake", "capability": "exec", "command": None},
        ),
        (BuildError("bake failed", log=["E: no package"]), {"log": ["E: no package"]}),
        (
            StateError("already done", record="build id 3", status="built"),
            {"record": "build id 3", "status": "built", "path": None, "schema_version": None},
        ),
        (
            LockedError("deploy lock is held", lock="deploy", holder={"pid": 7}),
            {"lock": "deploy", "holder": {"pid": 7}, "path": None},
        ),
        (
            GateError("not tested", roles=["web", "api"]),
            {"roles": ["web", "api"], "role": None, "secrets": []},
        ),
    ],
)
def test_to_dict_has_the_kind_the_message_and_every_field(
    error: CorralError, fields: dict[str, Any]
) -> None:
    data = error.to_dict()
    assert data["error"] == error.kind and data["message"] == error.message
    assert data.items() >= fields.items()
    assert set(data) == {"error", "message", *(f for f in vars(error) if not f.startswith("_"))}


def test_spec_error_lists_its_diagnostics_as_data() -> None:
    error = SpecError([Diagnostic("corral.yaml", 4, 5, "roles.web.replcas", "unknown key")])
    assert error.message == "1 problem in the spec"
    assert error.to_dict()["diagnostics"] == [
        {
            "file": "corral.yaml",
            "line": 4,
            "column": 5,
            "path": "roles.web.replcas",
            "message": "unknown key",
        }
    ]


def test_a_failure_of_several_roles_names_them_and_nests_each() -> None:
    web = DeployError("role web: unhealthy", role="web", log=["web-1: boom"])
    api = DeployError("it exited (code 3)").for_role("api")
    both = DeployError.of_roles([web, api])
    assert both.message == "role web: unhealthy; it exited (code 3)"
    assert list(both.roles) == ["web", "api"] and api.role == "api"
    assert both.failures[0] is web and web.for_role("web") is web
    data = both.to_dict()
    assert [f["role"] for f in data["failures"]] == ["web", "api"]
    assert (
        data["failures"][0]["log"] == ["web-1: boom"] and data["failures"][0]["error"] == "deploy"
    )


def test_an_engine_error_that_fails_a_deploy_keeps_its_kind_and_log() -> None:
    edge = EngineError("the edge did not start", log=["haproxy: bind failed"])
    failed = as_deploy_error(edge)
    assert (failed.reason, failed.cause, list(failed.log)) == (
        edge.message,
        "engine",
        ["haproxy: bind failed"],
    )
    assert as_deploy_error(failed) is failed


def test_a_failed_release_keeps_the_failures_fields() -> None:
    failed = ReleaseFailed("release r2 failed", role="web", release=2, rolled_back_to=1)
    data = failed.to_dict()
    assert (data["error"], data["role"], data["release"], data["rolled_back_to"]) == (
        "deploy",
        "web",
        2,
        1,
    )
    assert data["undo_error"] is None  # a field is always there, null when it does not apply


def test_scrub_removes_secrets_from_every_text_and_keeps_types() -> None:
    scrubber = Scrubber.of([SECRET])
    inner = DeployError(f"role web: {SECRET}", role="web", log=(f"env {SECRET}",))
    error = DeployError.of_roles([inner])
    error.scrub(scrubber)
    assert SECRET not in repr(error.to_dict()) and SECRET not in str(error)
    assert inner.log == ("env ***",)  # a tuple stays a tuple
    locked = LockedError("held", lock="deploy", holder={"purpose": f"deploy {SECRET}"})
    locked.scrub(scrubber)
    assert locked.holder == {"purpose": "deploy ***"}
    spec = SpecError([Diagnostic("f", 1, 1, "p", f"got {SECRET}")])
    spec.scrub(scrubber)
    assert SECRET not in repr(spec.to_dict())
    engine = EngineError("failed", command=["podman", f"--env=X={SECRET}"], stderr=SECRET)
    engine.scrub(scrubber)
    assert engine.command == ["podman", "--env=X=***"] and engine.stderr == "***"
