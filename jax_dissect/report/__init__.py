"""The HTML report of a results directory (html.py; the page's template,
CSS and JS are package data files beside it; thumbnails.py finds the
images)."""

from jax_dissect.report.html import build_report
from jax_dissect.report.html import collect_report_data
from jax_dissect.report.html import render_html
from jax_dissect.report.html import thumbnail_data_uri
from jax_dissect.report.thumbnails import report_loader
from jax_dissect.report.thumbnails import save_thumbnails

__all__ = ["build_report", "collect_report_data", "render_html",
           "report_loader", "save_thumbnails", "thumbnail_data_uri"]
