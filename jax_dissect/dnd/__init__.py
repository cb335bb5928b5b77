"""Describe-and-Dissect (DnD): open-vocabulary neuron descriptions.

Bai, Iyer, Oikarinen, Kulkarni, Weng, "Interpreting Neurons in Deep Vision
Networks with Language Models", TMLR 2025. No concept set: a neuron's most
activating images (and attention crops of them) are captioned, a language
model distils candidate concepts from the captions, and the candidate whose
generated images the neuron responds to most is chosen.

Stages (one module each, every model a replaceable callable):

- crops.py: top images and Otsu attention crops (regions.py: Otsu, boxes);
- candidates.py: captions -> simplified captions -> candidate concepts
  (the prompts live there);
- selection.py: generate images per candidate and rank them by the
  neuron's activation, weighted by CLIP similarity; or score candidates
  with a CLIP-Dissect kernel on the probe set;
- models.py: the spec resolver and default Flax models;
- store.py: content-keyed storage of every stage's outputs;
- run.py: `describe_and_dissect`, all stages for some neurons of a layer.

See docs/dnd.md for plugging in real models.
"""

from jax_dissect.dnd.config import DnDConfig
from jax_dissect.dnd.run import CSV_COLUMNS
from jax_dissect.dnd.run import DnDResult
from jax_dissect.dnd.run import describe_and_dissect
from jax_dissect.dnd.store import CacheStore
from jax_dissect.dnd.store import Store
from jax_dissect.dnd.target import Target

__all__ = ["CSV_COLUMNS", "CacheStore", "DnDConfig", "DnDResult", "Store",
           "Target", "describe_and_dissect"]
