"""The spec loader on good input: what a valid spec turns into."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.errors import SpecError, UsageError
from corral.spec.load import LoadedSpec, check_files, load_spec
from corral.spec.model import ContainerfileBase, DebianBase, HttpHealth, TcpHealth

GOOD = """\
version: 1
fleet: shop
state: var/corral.db
roles:
  web:
    base:
      debian: bookworm
      packages: [python3, curl]
    build:
      copy:
        - {src: app.py, dest: /srv/app.py}
        - {src: static, dest: /srv/static}
      run: ["python3 -m compileall /srv"]
    run:
      command: [python3, /srv/app.py]
      port: 8080
      env: {MODE: prod, WORKERS: 4}
      secrets: [DB_PASSWORD]
      workdir: /srv
    health: {http: /healthz, interval: 500ms, timeout: 2s, retries: 10}
    replicas: 2
    tests: [tests/smoke.sh]
    public: 80
    after: [db]
    deploy: {strategy: rolling, max_surge: 1, keep_old: 5m, drain: 3}
    lockdown: {capabilities: [NET_BIND_SERVICE]}
    resources: {memory: 256m, cpus: 0.5, pids: 128}
  db:
    base: {containerfile: db/Containerfile}
    run: {command: [postgres], user: postgres, port: 5432}
    health: {tcp: true}
    volumes: {data: /var/lib/postgresql/data}
"""


def write_project(folder: Path, text: str = GOOD) -> Path:
    """A spec plus the files it refers to."""
    (folder / "static").mkdir()
    (folder / "db").mkdir()
    (folder / "tests").mkdir()
    for name in ("app.py", "db/Containerfile", "tests/smoke.sh"):
        (folder / name).write_text("x\n")
    spec = folder / "corral.yaml"
    spec.write_text(text)
    return spec


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedSpec:
    return load_spec(write_project(tmp_path))


def test_good_spec_loads(loaded: LoadedSpec, tmp_path: Path) -> None:
    fleet = loaded.fleet
    assert fleet.fleet == "shop"
    assert list(fleet.roles) == ["web", "db"]
    web, db = fleet.roles["web"], fleet.roles["db"]
    assert isinstance(web.base, DebianBase)
    assert web.base.packages == ("python3", "curl")
    assert isinstance(db.base, ContainerfileBase)
    assert isinstance(web.health, HttpHealth)
    assert isinstance(db.health, TcpHealth)
    assert web.run.port == 8080
    assert web.run.env == {"MODE": "prod", "WORKERS": "4"}
    assert web.build.copy_[1].src == "static"
    assert web.after == ("db",)
    assert web.replicas == 2


def test_durations_become_seconds(loaded: LoadedSpec) -> None:
    web = loaded.fleet.roles["web"]
    assert isinstance(web.health, HttpHealth)
    assert web.health.interval == 0.5
    assert web.health.timeout == 2.0
    assert web.deploy.keep_old == 300.0
    assert web.deploy.drain == 3.0


def test_paths(loaded: LoadedSpec, tmp_path: Path) -> None:
    assert loaded.path == tmp_path / "corral.yaml"
    assert loaded.path.is_absolute()
    assert loaded.root == tmp_path
    assert loaded.state_path == tmp_path / "var" / "corral.db"


def test_relative_path_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    spec = load_spec(Path("corral.yaml"))
    assert spec.root == tmp_path
    assert spec.path.is_absolute()


def test_default_state_path(tmp_path: Path, state_home: Path) -> None:
    spec = load_spec(write_project(tmp_path, GOOD.replace("state: var/corral.db\n", "")))
    assert spec.state_path == state_home / "shop" / "state.db"  # the host's, not the checkout's


def test_role_section_is_plain_and_stable(loaded: LoadedSpec, tmp_path: Path) -> None:
    section = loaded.role_section("web")
    text = json.dumps(section, sort_keys=True)
    assert json.loads(text) == section
    assert section["build"]["copy"][0] == {"src": "app.py", "dest": "/srv/app.py"}
    assert section["run"]["user"] == "app"
    assert section["base"]["debian"] == "bookworm"
    # The same spec written differently (key order, defaults spelled out) gives equal data.
    again = load_spec(tmp_path / "corral.yaml").role_section("web")
    assert json.dumps(again, sort_keys=True) == text
    reordered = GOOD.replace("    replicas: 2\n", "").replace(
        "  web:\n", "  web:\n    replicas: 2\n    volumes: {}\n"
    )
    (tmp_path / "corral.yaml").write_text(reordered)
    assert json.dumps(load_spec(tmp_path / "corral.yaml").role_section("web")) == json.dumps(
        section
    )


def test_role_section_unknown_role(loaded: LoadedSpec) -> None:
    with pytest.raises(UsageError, match="no role named 'nope'"):
        loaded.role_section("nope")


def test_check_files_clean_then_missing(loaded: LoadedSpec, tmp_path: Path) -> None:
    assert check_files(loaded) == []
    (tmp_path / "tests" / "smoke.sh").unlink()
    (tmp_path / "db" / "Containerfile").unlink()
    problems = check_files(loaded)
    assert [(d.path, d.line) for d in problems] == [
        ("roles.web.tests[0]", 22),
        ("roles.db.base.containerfile", 29),
    ]
    assert all(d.column > 1 for d in problems)


def test_check_files_without_document(loaded: LoadedSpec, tmp_path: Path) -> None:
    bare = LoadedSpec(fleet=loaded.fleet, path=loaded.path, root=loaded.root)
    assert check_files(bare) == []
    (tmp_path / "app.py").unlink()
    [problem] = check_files(bare)
    assert problem.path == "roles.web.build.copy[0].src"
    assert problem.line == 0


def test_a_directory_is_not_a_containerfile(tmp_path: Path) -> None:
    spec = write_project(tmp_path)
    (tmp_path / "db" / "Containerfile").unlink()
    (tmp_path / "db" / "Containerfile").mkdir()
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    [problem] = caught.value.diagnostics
    assert "not a regular file" in problem.message
    assert (problem.path, problem.line) == ("roles.db.base.containerfile", 29)


def test_tests_may_name_a_folder(tmp_path: Path) -> None:
    spec = write_project(tmp_path)
    (tmp_path / "tests" / "smoke.sh").unlink()
    (tmp_path / "tests" / "smoke.sh").mkdir()
    assert load_spec(spec).fleet.roles["web"].tests == ("tests/smoke.sh",)


def test_minimal_spec_defaults(tmp_path: Path) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text(
        "fleet: tiny\nroles:\n  app:\n    base: {image: alpine}\n    run:\n"
        "      command: [sleep, infinity]\n"
    )
    role = load_spec(spec).fleet.roles["app"]
    assert role.replicas == 1
    assert role.run.user == "app"
    assert role.health is None
    assert role.deploy.strategy == "rolling"


def test_example_in_docs_loads(tmp_path: Path) -> None:
    docs = Path(__file__).parents[2] / "docs" / "spec.md"
    example = docs.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    for folder in ("app", "tests", "db"):
        (tmp_path / folder).mkdir()
    for name in ("requirements.txt", "tests/smoke.sh", "db/Containerfile"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "corral.yaml").write_text(example)
    spec = load_spec(tmp_path / "corral.yaml")
    assert set(spec.fleet.roles) == {"web", "db"}
    assert spec.state_location.origin == "default"
