"""The Grafana dashboard only queries metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import Stack, chat

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"


async def test_dashboard_queries_exported_metrics(stack: Stack) -> None:
    await stack.gateway.post("/v1/chat/completions", json=chat("x"))
    exported = set(re.findall(r"^# TYPE (\w+)", await (await stack.admin.get("/metrics")).text(), re.M))
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        re.sub(r"_(bucket|sum|count|total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(containment_\w+)", target["expr"])
    }
    assert used and used <= {re.sub(r"_total$", "", name) for name in exported} | exported
