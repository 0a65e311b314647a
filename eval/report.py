"""Write a run's report to a folder in its three forms: report.json for machines, report.md and report.html for
people. Building the report is eval.summary's work; rendering it, eval.report_markdown's and eval.report_html's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.report_html import to_html
from eval.report_markdown import to_markdown


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(to_markdown(report))
    paths["html"].write_text(to_html(report))
    return paths
