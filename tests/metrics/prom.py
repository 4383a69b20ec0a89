"""Scrape and parse /metrics exactly as exposed (prometheus-client's parser renames counters)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> tuple[list[Sample], dict[str, str]]:
    """Samples and the declared TYPE of every family."""
    samples, types = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = _LINE.match(line)
            assert m, f"bad exposition line: {line!r}"
            labels = {k: bytes(v, "utf-8").decode("unicode_escape")
                      for k, v in _LABEL.findall(m.group(2) or "")}
            samples.append(Sample(m.group(1), labels, float(m.group(3))))
    return samples, types


def scrape_text(base_url: str) -> str:
    return httpx.get(f"{base_url}/metrics", timeout=10).raise_for_status().text


def scrape(base_url: str) -> list[Sample]:
    return parse(scrape_text(base_url))[0]


def find(samples: list[Sample], metric: str, /, **labels: str) -> list[Sample]:
    return [s for s in samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]


def one(samples: list[Sample], metric: str, /, **labels: str) -> float:
    hits = find(samples, metric, **labels)
    assert len(hits) == 1, f"{metric} {labels}: {len(hits)} series"
    return hits[0].value
