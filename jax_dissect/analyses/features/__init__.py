"""Features, not only neurons: sparse autoencoders and user directions.

  sae = train_sae(A, num_features=4096)       # A: (N, C) or maps, or blocks
  codes = sae.encode(A)                        # (N, F) non-negative
  sae.fit   # fraction_of_variance_explained, mean_l0, dead_fraction
  labels = label_features(sae, A, P, concepts=names)   # scores (F, M)
  labels = label_directions(np.load("dirs.npy"), A, P)  # (D, C) directions

Modules: model (the SAE, encode/decode, save/load), training (train_sae,
evaluate_sae), streams (rows in bounded memory), labels (kernel labels of
features and directions).
"""

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

__all__ = ["Labels", "Options", "SparseAutoencoder", "evaluate_sae",
           "label_directions", "label_features", "label_units",
           "load_directions", "load_sae", "project", "train_sae"]
