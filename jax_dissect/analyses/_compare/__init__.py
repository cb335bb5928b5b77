"""Comparing runs: two networks, or a series of checkpoints of one.

  comparison = compare_runs([load_run(a), load_run(b)], alpha=0.05)
  write_comparison(comparison, "compare_out")   # CSVs, PNGs, comparison.json

Not an analysis (those take one run): `jax-dissect compare` runs it and
jax_dissect.report.compare draws its page. Modules: matching (label
agreement, matches by label and by activation correlation), runs (the
tables, charts, notes and trend).
"""

from jax_dissect.analyses._compare.matching import best_matches
from jax_dissect.analyses._compare.matching import correlation_matrix
from jax_dissect.analyses._compare.matching import label_agreement
from jax_dissect.analyses._compare.matching import label_overlap
from jax_dissect.analyses._compare.matching import matches_by_label
from jax_dissect.analyses._compare.runs import compare_runs
from jax_dissect.analyses._compare.runs import Comparison
from jax_dissect.analyses._compare.runs import MANIFEST
from jax_dissect.analyses._compare.runs import write_comparison

__all__ = ["best_matches", "Comparison", "compare_runs",
           "correlation_matrix", "label_agreement", "label_overlap",
           "MANIFEST", "matches_by_label", "write_comparison"]
