"""Scrape and parse /metrics with prometheus-client's own text parser."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(base_url: str) -> list[Sample]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).raise_for_status().text
    return [Sample(s.name, dict(s.labels), s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples]


def find(samples: list[Sample], metric: str, /, **labels: str) -> list[Sample]:
    return [s for s in samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]


def one(samples: list[Sample], metric: str, /, **labels: str) -> float:
    hits = find(samples, metric, **labels)
    assert len(hits) == 1, f"{metric} {labels}: {len(hits)} series"
    return hits[0].value
