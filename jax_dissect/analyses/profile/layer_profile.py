"""Layer-wise network profile: which kinds of concepts each layer detects.

Each neuron's label is mapped to a category (default object, part, scene,
material, texture, color, unknown) by a categorizer; a neuron counts as
interpretable when its score is > tau (0.16 is the published value for
soft_wpmi) or, when an alpha is given, when its label's permutation q-value
(jax_dissect.analyses.scoring.significance) is < alpha. Per layer, the share of
neurons that are interpretable and of each category is reported (CSV/JSON) and
plotted (one bar-chart panel per layer), plus the interpretable fraction as a
function of tau.

Categorizers share one interface: `categorizer(labels) -> categories`, with
the allowed categories in `categorizer.categories`:

- `ClipZeroShotCategorizer`: cosine of the label's text embedding with a few
  descriptive prompts per category (CLIP text space; no network needed when
  the embedder is local);
- `TableCategorizer`: a label -> category table file (e.g. Broden's);
- `LLMCategorizer`: any callable prompt -> answer the user supplies, asked
  `LLM_PROMPT` once per distinct label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import csv
import dataclasses
import os
import re
from typing import Any, Protocol

import numpy as np

from jax_dissect.clip import text_embed

DEFAULT_CATEGORIES = ("object", "part", "scene", "material", "texture",
                      "color", "unknown")
UNKNOWN = "unknown"
# Published interpretability cut-offs by similarity function.
DEFAULT_TAU = {"soft_wpmi": 0.16}

# Descriptions CLIP's text tower compares labels with, per category; a
# category without an entry is described by its own name.
DEFAULT_PROMPTS = {
    "object": ("an object", "a kind of animal or thing", "a vehicle, tool or "
               "piece of furniture"),
    "part": ("a part of an object", "a part of a body or of an animal",
             "a component of a machine"),
    "scene": ("a scene", "a place, indoors or outdoors", "a kind of room or "
              "landscape"),
    "material": ("a material", "what a thing is made of, such as wood or "
                 "metal"),
    "texture": ("a texture", "a pattern on a surface, such as stripes or "
                "dots"),
    "color": ("a color", "a colour name such as red or blue"),
}

LLM_PROMPT = (
    "You sort the names of visual concepts into categories.\n"
    "Categories: {categories}.\n"
    "Answer with exactly one category name from the list and nothing else; "
    "answer \"unknown\" if none fits.\n"
    "Concept: {label}\n"
    "Category:")


class Categorizer(Protocol):
  """Maps labels to categories; `categories` lists the allowed outputs."""

  categories: tuple[str, ...]

  def __call__(self, labels: Sequence[str]) -> list[str]:
    ...


def _check_categories(categories: Sequence[str]) -> tuple[str, ...]:
  categories = tuple(categories)
  if not categories or len(set(categories)) != len(categories):
    raise ValueError(f"categories must be a non-empty list of distinct names, "
                     f"got {list(categories)}")
  return categories


class ClipZeroShotCategorizer:
  """Zero-shot categories from text-embedding cosines (CLIP text space).

  A category's embedding is the normalised mean of its prompts' embeddings;
  a label goes to the category of highest cosine, or to "unknown" (if that
  is a category) when the best cosine is below `min_cosine`.
  """

  def __init__(self, text_embed_fn: text_embed.TextEmbedFn,
               categories: Sequence[str] = DEFAULT_CATEGORIES,
               prompts: Mapping[str, Sequence[str]] | None = None,
               min_cosine: float | None = None):
    """Builds the classifier.

    Args:
      text_embed_fn: list of n strings -> (n, D) normalised embeddings.
      categories: output categories; "unknown" is never predicted from
        prompts, only as the fallback.
      prompts: category -> descriptions; default DEFAULT_PROMPTS.
      min_cosine: below this best cosine a label is "unknown".
    """
    self.categories = _check_categories(categories)
    self._embed = text_embed_fn
    self._min_cosine = min_cosine
    prompts = DEFAULT_PROMPTS if prompts is None else prompts
    self._scored = [c for c in self.categories if c != UNKNOWN]
    if not self._scored:
      raise ValueError("ClipZeroShotCategorizer needs at least one category "
                       "other than 'unknown'")
    if min_cosine is not None and UNKNOWN not in self.categories:
      raise ValueError("min_cosine needs 'unknown' among the categories")
    texts, owner = [], []
    for i, c in enumerate(self._scored):
      for p in prompts.get(c, (c,)):
        texts.append(p)
        owner.append(i)
    emb = text_embed.embed_unique(text_embed_fn, texts)
    owner = np.asarray(owner)
    self._category_emb = text_embed.normalize_rows(np.stack(
        [emb[owner == i].mean(0) for i in range(len(self._scored))]))

  def __call__(self, labels: Sequence[str]) -> list[str]:
    if not labels:
      return []
    cos = text_embed.embed_unique(self._embed, labels) @ self._category_emb.T
    best = np.argmax(cos, axis=1)
    out = [self._scored[j] for j in best]
    if self._min_cosine is not None:
      low = cos[np.arange(len(best)), best] < self._min_cosine
      out = [UNKNOWN if l else c for c, l in zip(out, low)]
    return out


class TableCategorizer:
  """Categories looked up in a label -> category table.

  Labels match case- and whitespace-insensitively; labels not in the table
  get `default`.
  """

  def __init__(self, table: Mapping[str, str],
               categories: Sequence[str] = DEFAULT_CATEGORIES,
               default: str = UNKNOWN):
    self.categories = _check_categories(categories)
    if default not in self.categories:
      raise ValueError(f"default category {default!r} is not one of "
                       f"{list(self.categories)}")
    bad = sorted({c for c in table.values() if c not in self.categories})
    if bad:
      raise ValueError(f"table uses categories {bad} that are not allowed; "
                       f"allowed: {list(self.categories)}")
    self._table = {_norm(k): v for k, v in table.items()}
    self._default = default

  @classmethod
  def from_file(cls, path: str | os.PathLike,
                categories: Sequence[str] = DEFAULT_CATEGORIES,
                default: str = UNKNOWN) -> "TableCategorizer":
    """Reads a table file: one `label<TAB>category` or `label,category` per
    line (a CSV with a quoted label is fine); blank lines and lines starting
    with # are skipped; a header `label,category` is allowed."""
    table = {}
    try:
      with open(path, encoding="utf-8-sig", newline="") as f:
        lines = [l for l in f
                 if l.strip() and not l.lstrip().startswith("#")]
    except UnicodeDecodeError as e:
      raise ValueError(f"category_table {os.fspath(path)!r} is not UTF-8 "
                       f"text (byte {e.start}); it must be a "
                       "label<TAB>category or label,category file") from None
    delimiter = "\t" if lines and "\t" in lines[0] else ","
    for lineno, row in enumerate(csv.reader(lines, delimiter=delimiter), 1):
      if len(row) < 2:
        shown = repr(row)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"category_table {os.fspath(path)!r}: line {lineno} "
                         f"{shown} is not 'label<TAB>category' or "
                         "'label,category'")
      label, category = row[0].strip(), row[-1].strip()
      if lineno == 1 and (label.lower(), category.lower()) == ("label",
                                                                "category"):
        continue
      table[label] = category
    return cls(table, categories, default)

  def __call__(self, labels: Sequence[str]) -> list[str]:
    return [self._table.get(_norm(l), self._default) for l in labels]


class LLMCategorizer:
  """Asks a user-supplied language model for each distinct label's category.

  The model is any callable prompt (str) -> answer (str). The prompt is
  `prompt_template` (default LLM_PROMPT) formatted with {categories} (comma
  separated) and {label}. The allowed category name that occurs first in
  the answer, as whole words, is taken (case-insensitive); otherwise
  "unknown" if allowed, else an error.
  """

  def __init__(self, llm: Callable[[str], str],
               categories: Sequence[str] = DEFAULT_CATEGORIES,
               prompt_template: str = LLM_PROMPT):
    self.categories = _check_categories(categories)
    if "{label}" not in prompt_template:
      raise ValueError("prompt_template must contain {label}")
    self._llm = llm
    self._template = prompt_template

  def parse(self, answer: str) -> str:
    """Returns the category named in `answer` (see the class docstring)."""
    answer = answer.lower()
    hits = []
    for c in self.categories:
      m = re.search(r"(?<![a-z])" + re.escape(c.lower()) + r"(?![a-z])",
                    answer)
      if m:
        hits.append((m.start(), c))
    if hits:
      return min(hits)[1]
    if UNKNOWN in self.categories:
      return UNKNOWN
    raise ValueError(f"LLM answer {answer!r} names none of the categories "
                     f"{list(self.categories)}")

  def __call__(self, labels: Sequence[str]) -> list[str]:
    found = {}
    for label in dict.fromkeys(labels):
      prompt = self._template.format(categories=", ".join(self.categories),
                                     label=label)
      found[label] = self.parse(self._llm(prompt))
    return [found[l] for l in labels]


def _norm(s: str) -> str:
  return " ".join(s.lower().split())


@dataclasses.dataclass
class Profile:
  """A layer-wise profile.

  Attributes:
    categories: the category order of all tables and charts.
    tau: the score cut-off (interpretable: score > tau unless alpha is set).
    alpha: None, or the q-value cut-off used instead (interpretable:
      q_value < alpha).
    neurons: per neuron: layer, unit, description, similarity, category,
      interpretable (and q_value when alpha is set).
    layers: per layer (in order): layer, n_neurons, n_interpretable,
      interpretable_fraction, and per category c: count_<c>, percent_<c>
      (percent of all neurons of the layer that are interpretable and of
      category c; these sum to 100 * interpretable_fraction).
    taus: (T,) the tau grid of the interpretability curve.
    interpretable_vs_tau: layer -> (T,) fraction of neurons with score > tau.
  """
  categories: tuple[str, ...]
  tau: float
  neurons: list[dict[str, Any]]
  layers: list[dict[str, Any]]
  taus: np.ndarray
  interpretable_vs_tau: dict[str, np.ndarray]
  alpha: float | None = None

  @property
  def cutoff(self) -> str:
    """The interpretability rule, e.g. 'score > 0.16' or 'q < 0.05'."""
    return (f"score > {self.tau:g}" if self.alpha is None else
            f"q < {self.alpha:g}")


def default_tau(similarity_fn: str) -> float:
  """The published tau of `similarity_fn`; ValueError if there is none."""
  if similarity_fn not in DEFAULT_TAU:
    raise ValueError(f"no published tau for similarity function "
                     f"{similarity_fn!r} (known: {DEFAULT_TAU}); pass tau")
  return DEFAULT_TAU[similarity_fn]


def profile_neurons(neurons: Sequence[Any],
                    categorizer: Categorizer, tau: float,
                    taus: Sequence[float] | None = None,
                    num_taus: int = 41, *,
                    q_values: Mapping[tuple[str, int], float] | None = None,
                    alpha: float | None = None) -> Profile:
  """Categorizes labelled neurons and summarises them per layer.

  Args:
    neurons: results.Neuron records (layer, unit, description, similarity),
      e.g. a run's neurons.
    categorizer: maps the descriptions to categories.
    tau: a neuron is interpretable if its similarity is > tau.
    taus: grid of the interpretability curve; default `num_taus` points
      spanning the observed scores.
    num_taus: size of the default grid.
    q_values: (layer, unit) -> the label's q-value; needed with alpha.
    alpha: if given, a neuron is interpretable if its q-value is < alpha
      (instead of score > tau; the tau curve stays on the scores).

  Returns:
    The Profile.
  """
  if not neurons:
    raise ValueError("no neurons to profile")
  if alpha is not None:
    if not 0.0 < alpha < 1.0:
      raise ValueError(f"alpha={alpha} must be in (0, 1)")
    missing = [(n.layer, int(n.unit)) for n in neurons
               if (n.layer, int(n.unit)) not in (q_values or {})]
    if missing:
      raise ValueError(f"alpha is set but {len(missing)} neurons (first: "
                       f"layer {missing[0][0]!r} unit {missing[0][1]}) have "
                       "no q-value")
  categories = tuple(categorizer.categories)
  labels = [n.description for n in neurons]
  cats = list(categorizer(labels))
  bad = sorted({c for c in cats if c not in categories})
  if bad:
    raise ValueError(f"categorizer returned {bad}, not among {categories}")
  scores = np.asarray([float(n.similarity) for n in neurons])
  rows = [{"layer": n.layer, "unit": int(n.unit),
           "description": n.description, "similarity": float(s),
           "category": c, "interpretable": bool(s > tau)}
          for n, s, c in zip(neurons, scores, cats)]
  if alpha is not None:
    for r in rows:
      r["q_value"] = float(q_values[(r["layer"], r["unit"])])
      r["interpretable"] = r["q_value"] < alpha
  layer_names = list(dict.fromkeys(r["layer"] for r in rows))
  layer_rows = []
  for layer in layer_names:
    mine = [r for r in rows if r["layer"] == layer]
    interp = [r for r in mine if r["interpretable"]]
    row = {"layer": layer, "n_neurons": len(mine),
           "n_interpretable": len(interp),
           "interpretable_fraction": len(interp) / len(mine)}
    for c in categories:
      count = sum(r["category"] == c for r in interp)
      row[f"count_{c}"] = count
      row[f"percent_{c}"] = 100.0 * count / len(mine)
    layer_rows.append(row)
  if taus is None:
    lo, hi = float(scores.min()), float(scores.max())
    lo, hi = min(lo, tau), max(hi, tau)
    taus = np.linspace(lo, hi, num_taus)
  taus = np.asarray(taus, np.float64)
  layer_of = np.asarray([r["layer"] for r in rows])
  curve = {layer: np.mean(scores[layer_of == layer][None, :] > taus[:, None],
                          axis=1) for layer in layer_names}
  return Profile(categories=categories, tau=float(tau), neurons=rows,
                 layers=layer_rows, taus=taus, interpretable_vs_tau=curve,
                 alpha=None if alpha is None else float(alpha))


def plot_profile(profile: Profile, path: str, *,
                 panel_width: float = 3.2) -> str:
  """Bar charts of category percentages, one panel per layer; writes PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(profile.layers)
  fig, axes = plt.subplots(1, n, figsize=(panel_width * n, 3.4), sharey=True,
                           squeeze=False)
  colors = plt.get_cmap("tab10")(np.arange(len(profile.categories)) % 10)
  top = max([row[f"percent_{c}"] for row in profile.layers
             for c in profile.categories] + [1.0])
  for ax, row in zip(axes[0], profile.layers):
    values = [row[f"percent_{c}"] for c in profile.categories]
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), profile.categories, rotation=60,
                  ha="right", fontsize=8)
    ax.set_title(f"{row['layer']}\n{100 * row['interpretable_fraction']:.0f}%"
                 f" of {row['n_neurons']} interpretable", fontsize=9)
    ax.set_ylim(0, top * 1.1)
  axes[0][0].set_ylabel(f"% of neurons ({profile.cutoff})")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_interpretable_vs_tau(profile: Profile, path: str) -> str:
  """Line plot of the interpretable fraction vs tau per layer; writes PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.4))
  for layer, frac in profile.interpretable_vs_tau.items():
    ax.plot(profile.taus, 100 * frac, label=layer)
  ax.axvline(profile.tau, color="gray", linestyle="--", linewidth=1)
  ax.set_xlabel("tau (score cut-off)")
  ax.set_ylabel("% interpretable neurons")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
