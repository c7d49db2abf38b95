import json

import pytest

from s2r_data.mapillary.errors import (
    Outcome,
    classify_graph_response,
    classify_image_response,
    classify_tile_response,
    parse_error_envelope,
)
from s2r_data.mapillary.replay import _err_rate_limit, _err_token, _err_unknown_field, _err_unknown_id


def _b(doc):
    return json.dumps(doc).encode()


def test_envelopes_parse():
    e = parse_error_envelope(_b(_err_rate_limit()))
    assert (e.code, e.is_transient, e.message) == (4, True, "Application request limit reached")
    e = parse_error_envelope(_b(_err_unknown_id("123")))
    assert (e.code, e.subcode) == (100, 33) and "'123' does not exist" in e.message
    assert parse_error_envelope(b"<html>") is None and parse_error_envelope(b"[]") is None


@pytest.mark.parametrize(
    "status,body,expected",
    [
        (200, b'{"data": []}', Outcome.OK),
        (403, _b(_err_rate_limit()), Outcome.RETRY),
        (429, b"Too Many Requests", Outcome.RETRY),
        (500, b"", Outcome.RETRY),
        (503, _b({"error": {"code": 2, "message": "x"}}), Outcome.RETRY),
        (401, b"", Outcome.AUTH),
        (500, _b(_err_token()), Outcome.AUTH),  # JOSM's fixture: code 190 on a 500
        (400, _b(_err_unknown_id("1")), Outcome.NOT_FOUND),
        (400, _b({"error": {"code": 1, "message": "bad"}}), Outcome.PERMANENT),
        (400, _b(_err_unknown_field("quality")), Outcome.PERMANENT),  # not a deleted image
    ],
)
def test_graph_classification(status, body, expected):
    assert classify_graph_response(status, body)[0] is expected


def test_tile_redirect_or_html_is_a_block():
    assert classify_tile_response(302, "text/html", b"")[0] is Outcome.BLOCKED
    assert classify_tile_response(200, "text/html; charset=utf-8", b"<html>")[0] is Outcome.BLOCKED
    assert classify_tile_response(200, "application/x-protobuf", b"\x1a")[0] is Outcome.OK
    assert classify_tile_response(429, "text/plain", b"")[0] is Outcome.RETRY
    assert classify_tile_response(401, "application/json", _b(_err_token()))[0] is Outcome.AUTH


def test_image_classification():
    assert classify_image_response(200) is Outcome.OK
    assert classify_image_response(403) is Outcome.STALE_URL and classify_image_response(410) is Outcome.STALE_URL
    assert classify_image_response(404) is Outcome.NOT_FOUND
    assert classify_image_response(502) is Outcome.RETRY


def test_tile_5xx_is_transient_even_as_html_only_the_block_signature_blocks():
    page = b"<html><head><title>502 Bad Gateway</title></head></html>"
    for status in (500, 502, 503, 504):
        assert classify_tile_response(status, "text/html; charset=utf-8", page)[0] is Outcome.RETRY
    assert classify_tile_response(301, "", b"")[0] is Outcome.BLOCKED  # redirect (to the login page)
    assert classify_tile_response(200, "text/html", b"<html>Log in</html>")[0] is Outcome.BLOCKED  # it, followed


def test_image_body_problem_names_what_came_instead_of_a_jpeg():
    from s2r_data.mapillary.errors import image_body_problem
    from s2r_data.mapillary.sample_content import placeholder_jpeg

    assert image_body_problem("image/jpeg", placeholder_jpeg(64)[:64]) is None
    html = image_body_problem("text/html; charset=utf-8", b"<!DOCTYPE html><html><body>oops")
    assert html.startswith("image_not_jpeg: HTML page (text/html, starts '<!DOCTYPE html>")
    assert image_body_problem("", b"<html>x")[:31] == "image_not_jpeg: HTML page (no c"
    assert image_body_problem("application/json", b'{"error": 1}').startswith("image_not_jpeg: not a JPEG (application/json")
    assert image_body_problem("image/jpeg", b"") == "image_not_jpeg: empty body (image/jpeg)"
