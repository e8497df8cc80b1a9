"""The api role over HTTP through the edge; these also run as the post-deploy smoke test."""

import time
from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def client(edge_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge_url, timeout=5) as client:
        yield client


def test_time_says_now(client: httpx.Client) -> None:
    response = client.get("/time")
    assert response.status_code == 200
    body = response.json()
    assert abs(body["now"] - time.time()) < 60, "the api's clock is more than a minute off"
    assert body["uptime"] >= 0


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
