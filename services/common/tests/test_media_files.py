"""The shared media answer's Range handling: every range that cannot be served is a JSON 416
carrying the file's size, and no header, however long its numbers, makes it crash."""
import pytest
from flask import Flask

from mlstudio.common import media_files

CONTENT = bytes(range(100))


def answer(range_header: str | None, content: bytes = CONTENT):
    app = Flask("media")
    media = media_files.MediaFile(key="k", content_type="video/mp4", size=len(content), etag="abc", max_age_s=60)

    @app.get("/file")
    def _file():
        return media_files.media_response(media, lambda start, length: iter([content[start:None if length is None else start + length]]))

    headers = {"Range": range_header} if range_header is not None else {}
    return app.test_client().get("/file", headers=headers)


@pytest.mark.parametrize("header,size", [
    ("bytes=-0", 100),
    ("bytes=100-", 100),
    ("bytes=100-200", 100),
    ("bytes=5000-", 100),
    ("bytes=" + "9" * 5000 + "-", 100),
    ("bytes=0-", 0),
    ("bytes=-5", 0),
])
def test_unsatisfiable_range_is_json_416_with_the_size(header, size):
    response = answer(header, CONTENT[:size])
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    assert response.mimetype == "application/json"
    assert response.get_json()["code"] == "range_not_satisfiable"
    assert f"{size} bytes" in response.get_json()["message"]


@pytest.mark.parametrize("header,first,last", [
    ("bytes=0-9", 0, 9),
    ("bytes=90-", 90, 99),
    ("bytes=-10", 90, 99),
    ("bytes=-" + "9" * 5000, 0, 99),
    ("bytes=10-" + "9" * 5000, 10, 99),
    ("bytes=0000000000000000000000000000010-19", 10, 19),
])
def test_satisfiable_ranges_are_206(header, first, last):
    response = answer(header)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/100"
    assert response.data == CONTENT[first:last + 1]


@pytest.mark.parametrize("header", ["bytes=5-1", "bytes=0-1,5-9", "items=0-1", "bytes=\u0661-2"])
def test_malformed_or_multiple_ranges_get_the_whole_file(header):
    response = answer(header)
    assert response.status_code == 200 and response.data == CONTENT
