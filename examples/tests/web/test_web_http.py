"""The web role over HTTP through the edge; these also run as the post-deploy smoke test."""

from collections.abc import Iterator

import httpx
import pytest

GREETING = "hello from corral"


@pytest.fixture
def client(edge_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge_url, timeout=5) as client:
        yield client


def test_the_front_page_greets_and_counts_visits(client: httpx.Client) -> None:
    first = client.get("/")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/json")
    body = first.json()
    assert body["greeting"] == GREETING
    assert isinstance(body["visits"], int) and body["visits"] >= 1

    second = client.get("/").json()
    # Other visitors (or the health checks of a live fleet) may count too: more, not +1.
    assert second["visits"] > body["visits"]


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_an_unknown_path_is_404(client: httpx.Client) -> None:
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
