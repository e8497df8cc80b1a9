"""The one scrubber: the fleet's secret values wherever they appear, and what looks secret;
in the state database (test records, audit, errors) and in everything the CLI prints."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from corral import app
from corral.cli.main import main
from corral.errors import BuildError, EngineError
from corral.scrub import MIN_VALUE_CHARS, ScrubbedStream, Scrubber
from corral.spec import load_spec
from corral.state import State

VALUE = "s3cr3t-Value-42"


def test_values_are_removed_wherever_they_appear() -> None:
    scrub = Scrubber.of([VALUE, "other-value"])
    assert scrub.values(f"url=postgres://u:{VALUE}@db/x{VALUE}") == "url=postgres://u:***@db/x***"
    assert scrub.text(f"connect {VALUE}; password=hunter2") == "connect ***; password=***"
    assert scrub.values("nothing here") == "nothing here"


def test_a_value_is_found_as_json_writes_it_and_without_its_blanks() -> None:
    odd = 'quo"te\\slash é\n'
    scrub = Scrubber.of([odd])
    assert scrub.values(json.dumps({"log": odd})) == '{"log": "***"}'
    assert scrub.values(json.dumps({"log": odd}, ensure_ascii=False)) == '{"log": "***"}'
    assert scrub.values(f"printed: {odd.strip()}.") == "printed: ***."


def test_the_longest_value_goes_first_and_short_values_are_left_alone() -> None:
    scrub = Scrubber.of(["abcd", "abcdefgh", "x" * (MIN_VALUE_CHARS - 1)])
    assert scrub.values("abcdefgh abcd xxx") == "*** *** xxx"


def test_data_scrubs_keys_that_look_secret_and_every_text() -> None:
    scrub = Scrubber.of([VALUE])
    data = {
        "api_key": "k",
        "message": f"failed with {VALUE}",
        "nested": [{"token": 1}, {"plain": "visible", VALUE: "key named by a value"}],
        "count": 3,
        "pair": ("a", f"x{VALUE}"),
    }
    assert scrub.data(data) == {
        "api_key": "***",
        "message": "failed with ***",
        "nested": [{"token": "***"}, {"plain": "visible", "***": "key named by a value"}],
        "count": 3,
        "pair": ["a", "x***"],
    }


def test_from_environ_takes_only_the_named_and_set() -> None:
    scrub = Scrubber.from_environ(["DB_PASSWORD", "UNSET"], {"DB_PASSWORD": VALUE, "X": "xxxxx"})
    assert scrub.values(f"{VALUE} xxxxx") == "*** xxxxx"
    assert VALUE not in repr(scrub)


def test_the_stream_writes_through_without_values() -> None:
    out = io.StringIO()
    stream = ScrubbedStream(out, Scrubber.of([VALUE]))
    assert stream.write(f"a {VALUE} b\n") == len(f"a {VALUE} b\n")
    assert out.getvalue() == "a *** b\n"


# -- the state database --------------------------------------------------------------------


def test_the_state_scrubs_everything_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with State.open(path, scrubber=Scrubber.of([VALUE])) as state:
        checks = [{"name": "t", "outcome": "failed", "message": f"got {VALUE}"}]
        run = state.record_test_run(
            "prod",
            "web",
            "i",
            "sha256:d",
            "1-a",
            "failed",
            checks,
            1.0,
            f"log {VALUE}",
            test_key="0" * 64,
        )
        assert run.log_excerpt == "log ***" and run.checks[0]["message"] == "got ***"
        entry = state.record_audit("prod", "deploy", "web", "failed", {"error": [f"x {VALUE}"]})
        assert entry.details == {"error": ["x ***"]}
        build = state.start_build("prod", "web", "hash")
        state.fail_build(build.id, "failed", f"podman said {VALUE}")
        release = state.start_release("prod", "deploy", {}, None)
        state.finish_release(release.id, "failed", f"health: {VALUE}")
    for file in tmp_path.iterdir():
        assert VALUE.encode() not in file.read_bytes(), file


# -- what the CLI prints ------------------------------------------------------------------

SPEC = """\
fleet: shop
roles:
  web:
    base: {image: localhost/web}
    run: {command: [web], secrets: [DB_PASSWORD]}
"""


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DB_PASSWORD", VALUE)
    path = tmp_path / "corral.yaml"
    path.write_text(SPEC)
    return path


def test_the_fleets_scrubber_knows_its_secret_values(spec: Path) -> None:
    assert app.scrubber(load_spec(spec)).values(VALUE) == "***"
    assert app.output_scrubber(spec.parent / "missing.yaml") == Scrubber()


@pytest.mark.parametrize("as_json", [False, True])
def test_errors_printed_by_the_cli_hold_no_secret_value(
    spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    def failing_build(*args: object, **kwargs: object) -> None:
        try:
            raise EngineError(f"podman printed {VALUE}", stderr=VALUE)
        except EngineError as exc:
            raise BuildError(f"build failed: {VALUE}", log=[f"RUN echo {VALUE}"]) from exc

    monkeypatch.setattr(app, "build", failing_build)
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), "build", *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert exited.value.code == 1
    assert "build failed: ***" in out + err
    assert VALUE not in out + err


def test_results_printed_by_the_cli_hold_no_secret_value(
    spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "audit", lambda *a, **k: [])
    report = SimpleNamespace(to_dict=lambda: {"images": [{"tag": f"web:{VALUE}"}]})
    monkeypatch.setattr(app, "images_report", lambda *a, **k: report)
    with pytest.raises(SystemExit):
        main(["-f", str(spec), "images", "--json"])
    out, _ = capsys.readouterr()
    assert json.loads(out) == {"images": [{"tag": "web:***"}]}
