"""The Prometheus rules and the Grafana dashboard parse and only use metrics that /metrics exports."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _exported() -> set[str]:
    """Sample names of a /metrics scrape, rendered from empty figures."""
    from prometheus_client.parser import text_string_to_metric_families

    from actors.config import Config
    from events.memory_store import MemoryEventStore
    from events.store import QueueCounts
    from serve_app.http.metrics import Figures, render
    from serve_app.http.pools import read_pools

    stats = {"submitted:photography": 1.0, "completed:photography:succeeded": 1.0, "upstream:pool-a:200": 1.0}
    pools = asyncio.run(read_pools(MemoryEventStore(), Config()))
    text = render(Figures(QueueCounts(0, 0, stats), {}, pools), Config()).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


EXPORTED = _exported()


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bgenqueue_[a-z_]+", expr))


def test_prometheus_rules_cover_genqueues_alerts_with_exported_metrics() -> None:
    """Backlog, error rate and slow processing rules exist and name only exported metrics."""
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"GenqueueBacklog", "GenqueueUpstreamErrorRate", "GenqueueSlowProcessing"} <= names
    for rule in rules:
        assert _metrics_in(rule["expr"]) <= EXPORTED, rule["alert"]
    backlog = next(r for r in rules if r["alert"] == "GenqueueBacklog")
    assert "> 50" in backlog["expr"]


def test_grafana_dashboard_is_valid_json_on_exported_metrics() -> None:
    """Every panel query uses metrics that /metrics exports."""
    dashboard = json.loads((ROOT / "deploy/grafana/genqueue-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 6
    for expr in exprs:
        assert _metrics_in(expr) <= EXPORTED, expr
