"""After a restart the dashboard shows the traffic the request log holds (issue 15), and
what the new process serves is added once, not twice."""

from __future__ import annotations

from nearline.testing import eventually, http


def _data(url: str) -> dict:
    response = http.get(f"{url}/dashboard/data", timeout=10)
    response.raise_for_status()
    return response.json()


def test_a_restarted_gateway_restores_its_figures_from_the_request_log(make_gateway, tmp_path):
    log = {"sqlite_path": str(tmp_path / "requests.sqlite")}
    first = make_gateway(request_log=log, cache={"semantic": {"enabled": False}})
    for question in ("What is a cache?", "What is a draft?", "What is a cache?"):
        assert first.chat(question, stream=True).status_code == 200
    assert _data(first.url)["requests"]["total"] == 3
    first.stop()  # flushes the request log

    second = make_gateway(request_log=log, cache={"semantic": {"enabled": False}})
    data = _data(second.url)
    assert data["restored"]["answers"] == 3
    assert data["requests"]["total"] == 3 and data["requests"]["ok"] == 3
    assert data["first_useful"]["count"] == 3
    assert data["cache"]["hits"] == {"exact": 1.0}
    assert sum(band["count"] for band in data["bands"]) == 3

    assert second.chat("Something new?", stream=True).status_code == 200
    assert eventually(lambda: _data(second.url)["requests"]["total"] == 4)
    assert _data(second.url)["restored"]["answers"] == 3  # read once, at the first look
