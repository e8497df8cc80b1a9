"""The app role over HTTP; the edge tests also run as the post-deploy smoke test, so they
only read. Writing a row goes to an instance directly (``corral test`` only)."""

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def client(edge_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge_url, timeout=10) as client:
        yield client


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_it_counts_the_rows_in_the_database(client: httpx.Client) -> None:
    response = client.get("/rows")
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["count"], int)


def test_a_posted_row_is_counted(instance_url: str) -> None:
    with httpx.Client(base_url=instance_url, timeout=10) as client:
        before = client.get("/rows").json()["count"]
        posted = client.post("/rows", content=b"from the app's tests")
        assert posted.status_code == 200, posted.text
        assert isinstance(posted.json()["id"], int)
        assert client.get("/rows").json()["count"] >= before + 1


def test_an_unknown_path_is_404(client: httpx.Client) -> None:
    assert client.get("/no-such-page").status_code == 404
