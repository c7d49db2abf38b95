"""The replay server speaks Mapillary: shapes, auth, envelopes, signed URLs, tiles, faults."""

import io
import os
import subprocess
import sys

import mercantile
import requests
from PIL import Image

from s2r_data.mapillary.coverage import decode_coverage_tile
from s2r_data.mapillary.replay import FaultConfig
from s2r_data.tiles import parse_tile_id, tiles_for_polygon

from .conftest import REPO, TOKEN

AUTH = {"Authorization": f"OAuth {TOKEN}"}


def test_graph_batch_shapes(small_content, server_factory):
    content, recs = small_content
    srv = server_factory(content)
    ids = [recs[0]["id"], recs[1]["id"], "999"]
    r = requests.get(f"{srv.graph_url}/images", params={"image_ids": ",".join(ids), "fields": "id,computed_rotation,thumb_2048_url,mesh"}, headers=AUTH)
    assert r.status_code == 200
    data = r.json()["data"]
    assert [d["id"] for d in data] == ids[:2]  # strings; unknown id left out
    for d in data:
        assert set(d) == {"id", "computed_rotation", "thumb_2048_url"}  # only requested, absent omitted
        u = d["thumb_2048_url"]
        assert u.startswith(srv.base_url) and "oh=" in u and "oe=" in u and TOKEN not in u
    img = requests.get(data[0]["thumb_2048_url"])
    assert img.status_code == 200 and img.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(img.content)).size == (128, 64)
    assert requests.get(data[0]["thumb_2048_url"].replace("oh=", "oh=0")).status_code == 403  # bad signature


def test_graph_single_and_errors(small_content, server_factory):
    content, recs = small_content
    srv = server_factory(content)
    r = requests.get(f"{srv.graph_url}/{recs[0]['id']}", params={"fields": "id,creator,is_pano"}, headers=AUTH)
    assert r.json() == {"id": recs[0]["id"], "creator": recs[0]["creator"], "is_pano": True}
    assert requests.get(f"{srv.graph_url}/{recs[0]['id']}", headers=AUTH).json() == {"id": recs[0]["id"]}
    r = requests.get(f"{srv.graph_url}/123", params={"fields": "id"}, headers=AUTH)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == 100 and err["error_subcode"] == 33 and "fbtrace_id" in err
    r = requests.get(f"{srv.graph_url}/{recs[0]['id']}", params={"fields": "id,bogus"}, headers=AUTH)
    assert r.status_code == 400 and "nonexisting field (bogus)" in r.json()["error"]["message"]
    r = requests.get(f"{srv.graph_url}/{recs[0]['id']}", headers={"Authorization": "OAuth MLY|wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == 190
    assert r.json()["error"]["message"] == "Invalid OAuth 2.0 Access Token"


def test_rate_limit_envelope_and_log(small_content, server_factory):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(graph_rate_per_s=1.0, graph_burst=2))
    codes = [requests.get(f"{srv.graph_url}/{recs[0]['id']}", headers=AUTH).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and 403 in codes[2:]
    r = requests.get(f"{srv.graph_url}/{recs[0]['id']}", headers=AUTH)
    assert r.status_code == 403 and r.json()["error"]["code"] == 4 and r.json()["error"]["is_transient"] is True
    log = srv.request_log("graph")
    assert len(log) == 5 and all(a["t"] <= b["t"] for a, b in zip(log, log[1:]))


def test_tiles_both_layers_and_token(small_content, server_factory, city):
    content, recs = small_content
    srv = server_factory(content)
    for layer in ("mly1_computed_public", "mly1_public"):
        found = []
        for tid in tiles_for_polygon(city.polygon):
            t = parse_tile_id(tid)
            url = f"{srv.tiles_url}/maps/vtp/{layer}/2/{t.z}/{t.x}/{t.y}"
            r = requests.get(url, params={"access_token": TOKEN}, allow_redirects=False)
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-protobuf"
            pts = decode_coverage_tile(r.content, t)
            assert pts  # the content spans both tiles
            found += [p.image_id for p in pts]
            assert requests.get(url, params={"access_token": "nope"}).status_code == 401
        assert sorted(found) == sorted(x["id"] for x in recs)
    # z13 has no image layer
    p = mercantile.parent(t)
    r = requests.get(f"{srv.tiles_url}/maps/vtp/mly1_public/2/{p.z}/{p.x}/{p.y}", params={"access_token": TOKEN})
    assert decode_coverage_tile(r.content, p) == []


def test_blocked_tiles_redirect_to_html(small_content, server_factory):
    srv = server_factory(small_content[0], FaultConfig(block_tiles=True))
    r = requests.get(f"{srv.tiles_url}/maps/vtp/mly1_public/2/14/8300/5639", params={"access_token": TOKEN}, allow_redirects=False)
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert "text/html" in requests.get(r.headers["Location"]).headers["Content-Type"]


def test_faults_are_seeded_and_reproducible(small_content, server_factory):
    content, recs = small_content

    def run():
        srv = server_factory(content, FaultConfig(seed=3, p_http_500=0.5))
        codes = [requests.get(f"{srv.graph_url}/{recs[i % 4]['id']}", headers=AUTH).status_code for i in range(16)]
        srv.stop()
        return codes

    a, b = run(), run()
    assert a == b and 500 in a and 200 in a


def test_add_images_at_runtime(small_content, server_factory, city):
    content, recs = small_content
    srv = server_factory(None)
    assert srv.image_ids == []
    srv.add_images(recs[:2], {})
    assert srv.image_ids == sorted(r["id"] for r in recs[:2])
    r = requests.post(f"{srv.base_url}/_replay/images", json={"records": recs[2:3]}, headers=AUTH)
    assert r.json()["total"] == 3
    assert requests.get(f"{srv.base_url}/_replay/stats", headers=AUTH).json()["counts"]["graph"] == 0
    assert requests.get(f"{srv.base_url}/_replay/stats").status_code == 401


def test_cli_prints_base_url(small_content):
    content, recs = small_content
    env = {**os.environ, "MAPILLARY_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2r_data.mapillary.replay", "--content", str(content), "--port", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("REPLAY_URL http://127.0.0.1:")
        base = line.split()[1]
        r = requests.get(f"{base}/{recs[0]['id']}", headers=AUTH, timeout=10)
        assert r.json() == {"id": recs[0]["id"]}
    finally:
        proc.terminate()
        proc.wait(10)


def test_html_faults_single_use_and_fresh_urls(small_content, server_factory):
    content, recs = small_content
    srv = server_factory(content, FaultConfig(p_html_502=1.0))
    t = "14/8299/5639".split("/")
    r = requests.get(f"{srv.tiles_url}/maps/vtp/mly1_public/2/{t[0]}/{t[1]}/{t[2]}", params={"access_token": TOKEN})
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html") and "Bad Gateway" in r.text
    assert requests.get(f"{srv.graph_url}/{recs[0]['id']}", headers=AUTH).status_code == 502

    srv = server_factory(content, FaultConfig(single_use_urls=True))
    srv.add_images([dict(recs[1], _replay_html_image=True)])

    def url(i):
        return requests.get(f"{srv.graph_url}/{recs[i]['id']}", params={"fields": "thumb_2048_url"}, headers=AUTH).json()["thumb_2048_url"]

    first, second = url(0), url(0)
    assert first != second  # every answer signs a new URL
    assert requests.get(first).status_code == 200
    again = requests.get(first)
    assert again.status_code == 403 and "already used" in again.text
    assert requests.get(second).status_code == 200  # a fresh one works
    html = requests.get(url(1))
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
