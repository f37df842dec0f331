"""Stage 7, the report: results.json → report.md, report.html and figures."""
