"""docs/reliability.md is rendered from the recorded figures."""

from __future__ import annotations

import json
from pathlib import Path

from integration.report import main


def test_the_report_has_a_table_per_scenario_and_fails_on_a_lost_job(tmp_path: Path) -> None:
    results, output = tmp_path / "results", tmp_path / "reliability.md"
    results.mkdir()
    base = {
        "title": "kill -9 of the worker",
        "fault": "SIGKILL",
        "duplicate_bound": 396,
        "recovery_seconds": 7.25,
        "recovery_bound": None,
        "notes": "restarted each time",
        "recorded_at": "2026-12-01 12:00:00 UTC",
    }
    counts = {"sent": 20000, "executed": 20000, "lost": 0, "duplicates": 12, "unconfirmed": 0}
    for size in (5000, 20000):
        row = {**base, "scenario": "1-worker-kill", "size": size, "count": {**counts, "sent": size}}
        (results / f"1-worker-kill-{size}.json").write_text(json.dumps(row))
    assert main(["report", str(results), str(output)]) == 0
    text = output.read_text()
    assert "## 1. Kill -9 of the worker" in text
    assert (
        "| make test | SIGKILL | 5,000 | 20,000 | 0 | 12 (≤ 396) | 7.2 s | 2026-12-01 12:00:00 UTC |" in text
    )
    assert "| FAULT_JOBS=20000 | SIGKILL | 20,000 |" in text
    assert "make faults" in text

    lost = {**base, "scenario": "2-x", "size": 5000, "count": {**counts, "lost": 1}}
    (results / "2-x-5000.json").write_text(json.dumps(lost))
    assert main(["report", str(results), str(output)]) == 1


def test_sections_without_new_figures_stay_and_variants_share_a_table(tmp_path: Path) -> None:
    results, output = tmp_path / "results", tmp_path / "reliability.md"
    results.mkdir()
    output.write_text("# old\n\n## 3. Kept as it was\n\n| old row |\n\n## What the scenarios found\n")
    counts = {"sent": 10, "executed": 10, "lost": 0, "duplicates": 0, "unconfirmed": 0}
    for variant in ("ssl", "sasl_ssl"):
        row = {
            "scenario": f"13-tls-{variant}",
            "title": "TLS listeners",
            "fault": variant.upper(),
            "size": 5000,
            "count": counts,
            "recorded_at": "2026-12-03 12:00:00 UTC",
        }
        (results / f"13-tls-{variant}-5000.json").write_text(json.dumps(row))
    assert main(["report", str(results), str(output)]) == 0
    text = output.read_text()
    assert "## 3. Kept as it was\n\n| old row |\n" in text
    assert text.count("## 13. TLS listeners") == 1
    assert "| make test | SSL |" in text and "| make test | SASL_SSL |" in text
    assert "## The same faults with Dramatiq's Redis and RabbitMQ brokers" in text
    assert text.index("## 3.") < text.index("## 13.") < text.index("## The same faults")
