"""The static role (nginx) over HTTP through the edge; also the post-deploy smoke test."""

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def client(edge_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge_url, timeout=5) as client:
        yield client


def test_the_front_page_is_html(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>corral stack</h1>" in response.text


def test_json_files_have_their_type(client: httpx.Client) -> None:
    response = client.get("/version.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["service"] == "static"


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_an_unknown_file_is_404_and_no_version_is_told(client: httpx.Client) -> None:
    response = client.get("/no-such-file")
    assert response.status_code == 404
    assert "nginx/" not in response.text
    assert response.headers.get("server") == "nginx"
