"""Features, not only neurons: sparse autoencoders and user directions.

The library (also importable as `jax_dissect.features`):

  sae = train_sae(A, num_features=4096)       # A: (N, C) or maps, or blocks
  codes = sae.encode(A)                        # (N, F) non-negative
  sae.fit   # fraction_of_variance_explained, mean_l0, dead_fraction
  labels = label_features(sae, A, P, concepts=names)   # scores (F, M)
  labels = label_directions(np.load("dirs.npy"), A, P)  # (D, C) directions

The analysis `features` of a describe_neurons run:

  python scripts/analyze.py --analysis=features --results_dir=results/rn50 \\
      --layers=layer4 --expansion=4 [--positions] [--directions=dirs.npy]

trains (or loads from the run's cache) an SAE per chosen layer, labels
every feature with the run's similarity function and concept set, scores
the labels (held-out simulation correlation, permutation p-values, BH
q-values; linear explanations with --linear) and writes features.csv (one
row per feature, a per-unit table of basis "sae"), features_summary.csv/
.json (per layer: variance explained, L0, dead fraction, mean correlation
of the features beside the neurons') and features.png; with --directions,
directions.csv and directions_summary.csv/.json likewise.

Modules: model (the SAE, encode/decode, save/load), training (train_sae,
evaluate_sae), streams (rows in bounded memory), labels (kernel labels of
features and directions), config (options), positions (per-position maps
re-run from the target), saved (trained SAEs in the run's cache), analysis
(the analysis: run, score_units).
"""

from jax_dissect.analyses.features.analysis import BASIS
from jax_dissect.analyses.features.analysis import COLUMNS
from jax_dissect.analyses.features.analysis import DESCRIPTION
from jax_dissect.analyses.features.analysis import DIRECTIONS_BASIS
from jax_dissect.analyses.features.analysis import DIRECTIONS_TABLE
from jax_dissect.analyses.features.analysis import NAME
from jax_dissect.analyses.features.analysis import run
from jax_dissect.analyses.features.analysis import score_units
from jax_dissect.analyses.features.analysis import SUMMARY_TABLE
from jax_dissect.analyses.features.analysis import TABLE
from jax_dissect.analyses.features.config import get_config
from jax_dissect.analyses.features.config import Settings
from jax_dissect.analyses.features.labels import label_directions
from jax_dissect.analyses.features.labels import label_features
from jax_dissect.analyses.features.labels import label_units
from jax_dissect.analyses.features.labels import Labels
from jax_dissect.analyses.features.labels import load_directions
from jax_dissect.analyses.features.labels import project
from jax_dissect.analyses.features.model import load_sae
from jax_dissect.analyses.features.model import SparseAutoencoder
from jax_dissect.analyses.features.training import evaluate_sae
from jax_dissect.analyses.features.training import Options
from jax_dissect.analyses.features.training import train_sae

__all__ = ["BASIS", "COLUMNS", "DESCRIPTION", "DIRECTIONS_BASIS",
           "DIRECTIONS_TABLE", "Labels", "NAME", "Options", "Settings",
           "SUMMARY_TABLE", "SparseAutoencoder", "TABLE", "evaluate_sae",
           "get_config", "label_directions", "label_features", "label_units",
           "load_directions", "load_sae", "project", "run", "score_units",
           "train_sae"]
