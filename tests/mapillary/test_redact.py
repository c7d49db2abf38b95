import logging

from s2r_data.mapillary.redact import MASK, Redactor, redact_url

TOKEN = "MLY|4242|abcdefabcdef"


def test_masks_raw_and_encoded_token():
    r = Redactor(TOKEN)
    for text in (
        f"GET https://tiles.mapillary.com/maps/vtp/x/2/14/1/2?access_token={TOKEN}",
        "GET ...?access_token=MLY%7C4242%7Cabcdefabcdef&x=1",
        f"header Authorization: OAuth {TOKEN}",
    ):
        out = r(text)
        assert "abcdefabcdef" not in out and "4242|" not in out, out
        assert MASK in out


def test_masks_any_access_token_and_signatures_even_unknown():
    out = Redactor()("x?access_token=MLY|1|zz&oh=deadbeef&oe=69B99862 and OAuth MLY|9|qq")
    assert "zz" not in out and "deadbeef" not in out and "69B99862" not in out and "qq" not in out


def test_keeps_ordinary_words():
    msg = "Invalid OAuth 2.0 Access Token (code 190)"
    assert Redactor(TOKEN)(msg) == msg


def test_redact_url_masks_every_query_value():
    u = redact_url("https://scontent.fbcdn.net/m1/v/t6/abc?stp=s2048x1024&oh=SIG&oe=69B99862")
    assert u == f"https://scontent.fbcdn.net/m1/v/t6/abc?stp={MASK}&oh={MASK}&oe={MASK}"
    assert redact_url("http://h/p") == "http://h/p"


def test_logging_filter_rewrites_message_args_and_traceback(caplog):
    r = Redactor(TOKEN)
    lg = logging.getLogger("test.redact")
    lg.addFilter(r.logging_filter())
    try:
        with caplog.at_level(logging.DEBUG, logger="test.redact"):
            lg.info("url %s", f"?access_token={TOKEN}")
            try:
                raise RuntimeError(f"boom {TOKEN}")
            except RuntimeError:
                lg.exception("failed")
    finally:
        lg.filters.clear()
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in text and "abcdefabcdef" not in text
    assert "boom" in text
