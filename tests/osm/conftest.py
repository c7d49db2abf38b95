"""Shared fixtures for the OSM builder tests: real extracts built once per session."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from s2r_data.cities import load_city
from s2r_data.osm import build_city_model


@pytest.fixture(scope="session")
def sample_city():
    return load_city("sample")


@pytest.fixture(scope="session")
def sample_model(sample_city):
    return build_city_model(sample_city)


@pytest.fixture(scope="session")
def helsinki_model():
    return build_city_model(load_city("helsinki"))


@pytest.fixture(scope="session")
def liechtenstein_model():
    return build_city_model(load_city("liechtenstein"))


def osm_xml(
    buildings: list[list[tuple[float, float]]] = (),
    roads: list[list[tuple[float, float]]] = (),
    bounds: tuple[float, float, float, float] | None = None,
) -> str:
    """A minimal sorted OSM XML document: closed building ways and highway=residential lines (lon, lat)."""
    nodes, ways = [], []
    nid, wid = 1, 1
    for kind, lines in (("building", buildings), ("road", roads)):
        for coords in lines:
            refs = []
            for lon, lat in coords:
                nodes.append(f'  <node id="{nid}" version="1" lat="{lat:.7f}" lon="{lon:.7f}"/>')
                refs.append(nid)
                nid += 1
            if kind == "building":
                refs.append(refs[0])
                tag = '<tag k="building" v="yes"/>'
            else:
                tag = '<tag k="highway" v="residential"/>'
            nds = "".join(f'<nd ref="{r}"/>' for r in refs)
            ways.append(f'  <way id="{wid}" version="1">{nds}{tag}</way>')
            wid += 1
    head = '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="s2r-tests">\n'
    if bounds is not None:
        head += f'  <bounds minlon="{bounds[0]}" minlat="{bounds[1]}" maxlon="{bounds[2]}" maxlat="{bounds[3]}"/>\n'
    return head + "\n".join(nodes + ways) + "\n</osm>\n"


def square(lon: float, lat: float, d: float = 0.0001) -> list[tuple[float, float]]:
    return [(lon, lat), (lon + d, lat), (lon + d, lat + d), (lon, lat + d)]


@pytest.fixture(scope="session")
def osm_tools() -> SimpleNamespace:
    """Helpers to write small synthetic OSM files: ``osm_xml(...)``, ``square(lon, lat)``."""
    return SimpleNamespace(osm_xml=osm_xml, square=square)
