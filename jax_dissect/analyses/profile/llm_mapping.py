"""The profiling paper's categorizer: one-shot, batched, a JSON mapping.

Li & Weng ("Profiling Vision Neural Networks with CLIP-Dissect", section
2.2) give a language model one worked example (a list of concepts, the list
of categories and the concept -> category mapping as JSON) and then a whole
list of concepts, and read the concept -> category mapping from its JSON
answer; concepts that are not interpretable words go to "unknown". This
module does the same with any language model:

- `build_prompt(concepts, categories)`: the one-shot prompt (our wording;
  the example's concepts and answer are `EXAMPLE`);
- `parse_mapping(answer, concepts, categories)`: the mapping read from an
  answer, leniently (the first {...} block; doubled braces, single quotes
  and trailing commas allowed; keys matched case- and space-insensitively;
  values outside the categories dropped);
- `MappingLLMCategorizer`: distinct labels in batches of `batch_size` per
  prompt (all prompts of a call go to the model's `batch` when it has one),
  labels missing from an answer asked again once in a batch of their own,
  then "unknown"; `stats` counts prompts and unmapped labels;
- `load_llm(spec)`: the model from "package.module:function" (any callable
  prompt -> answer), a hub id ("owner/name[@revision]") or a local
  directory of a Flax causal or seq2seq LM (analyses.dnd.models'
  FlaxTextGenerator, greedy decoding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import json
import os
import re
from typing import Any

from absl import logging

from jax_dissect.analyses.dnd import models as dnd_models
from jax_dissect.runtime import callables

UNKNOWN = "unknown"
# The worked example of the prompt: concepts and their categories (with the
# default categories; other categories get an example without categories
# they lack).
EXAMPLE = (("crimson", "color"), ("doorknob", "part"), ("xq", "unknown"),
           ("harbor", "scene"), ("velvet", "material"),
           ("checkered", "texture"), ("bicycle", "object"),
           ("wheel", "part"))
DEFAULT_BATCH_SIZE = 40
DEFAULT_MAX_NEW_TOKENS = 480

_TEMPLATE = (
    "Sort each concept into one of the categories. A concept that is not an "
    "interpretable word goes to \"unknown\". Answer with one JSON object "
    "that maps every concept to its category.\n\n"
    "Concepts: {example_concepts}\n"
    "Categories: {categories}\n"
    "Answer: {example_answer}\n\n"
    "Concepts: {concepts}\n"
    "Categories: {categories}\n"
    "Answer:")


def _norm(s: str) -> str:
  return " ".join(str(s).lower().split())


def build_prompt(concepts: Sequence[str], categories: Sequence[str],
                 example: Sequence[tuple[str, str]] = EXAMPLE) -> str:
  """The one-shot prompt for `concepts` (see the module docstring).

  Example pairs whose category is not among `categories` are left out.
  """
  allowed = {_norm(c) for c in categories}
  shown = [(c, k) for c, k in example if _norm(k) in allowed]
  return _TEMPLATE.format(
      example_concepts=", ".join(c for c, _ in shown),
      example_answer=json.dumps(dict(shown)),
      concepts=", ".join(concepts), categories=", ".join(categories))


_PAIR = re.compile(r"""["']([^"']+)["']\s*:\s*["']([^"']+)["']""")


def _json_object(answer: str) -> dict[str, Any] | None:
  """The first {...} block of `answer` as a dict, or None."""
  text = answer.replace("{{", "{").replace("}}", "}")
  start = text.find("{")
  while start >= 0:
    depth = 0
    for end in range(start, len(text)):
      if text[end] == "{":
        depth += 1
      elif text[end] == "}":
        depth -= 1
        if depth == 0:
          block = re.sub(r",\s*}", "}", text[start:end + 1])
          try:
            value = json.loads(block)
          except json.JSONDecodeError:
            break
          return value if isinstance(value, dict) else None
    start = text.find("{", start + 1)
  return None


def parse_mapping(answer: str, concepts: Sequence[str],
                  categories: Sequence[str]) -> dict[str, str]:
  """The concept -> category mapping in a model's answer.

  Args:
    answer: the model's text.
    concepts: the concepts asked about.
    categories: the allowed categories.

  Returns:
    {concept (as asked): category (as in `categories`)} for the concepts
    the answer maps to an allowed category; others are left out.
  """
  pairs = _json_object(answer)
  found = (list(pairs.items()) if pairs is not None
           else _PAIR.findall(answer))
  by_name = {_norm(c): c for c in categories}
  wanted = {_norm(c): c for c in concepts}
  out = {}
  for key, value in found:
    concept = wanted.get(_norm(key))
    category = by_name.get(_norm(value)) if isinstance(value, str) else None
    if concept is not None and category is not None:
      out.setdefault(concept, category)
  return out


def _ask(llm: Any, prompts: list[str]) -> list[str]:
  batch = getattr(llm, "batch", None)
  answers = batch(prompts) if callable(batch) else [llm(p) for p in prompts]
  answers = list(answers)
  if len(answers) != len(prompts) or not all(isinstance(a, str)
                                             for a in answers):
    raise ValueError(f"the language model returned {answers!r:.200} for "
                     f"{len(prompts)} prompts; expected one string each")
  return answers


class MappingLLMCategorizer:
  """Categories from a language model's JSON mappings (module docstring).

  Attributes:
    categories: the allowed categories ("unknown" is where unmapped labels
      go, and must be among them).
    stats: after a call, {"labels", "prompts", "retried", "unmapped"}: the
      distinct labels, prompts sent, labels asked again and labels no
      answer mapped (given "unknown").
  """

  def __init__(self, llm: Callable[[str], str],
               categories: Sequence[str], *,
               batch_size: int = DEFAULT_BATCH_SIZE, retry: bool = True,
               example: Sequence[tuple[str, str]] = EXAMPLE):
    """Builds the categorizer.

    Args:
      llm: prompt -> answer (with an optional `batch(prompts)`).
      categories: the allowed categories, "unknown" among them.
      batch_size: concepts per prompt.
      retry: ask once more about the labels an answer left out.
      example: the worked example's (concept, category) pairs.
    """
    self.categories = tuple(categories)
    if not self.categories or len(set(self.categories)) != len(
        self.categories):
      raise ValueError(f"categories must be distinct names; got "
                       f"{list(self.categories)}")
    if UNKNOWN not in self.categories:
      raise ValueError("the JSON-mapping categorizer needs 'unknown' among "
                       f"the categories; got {list(self.categories)}")
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
    self._llm, self._batch_size = llm, batch_size
    self._retry, self._example = retry, tuple(example)
    self.stats: dict[str, int] = {}

  def _round(self, labels: list[str]) -> tuple[dict[str, str], int]:
    chunks = [labels[i:i + self._batch_size]
              for i in range(0, len(labels), self._batch_size)]
    prompts = [build_prompt(c, self.categories, self._example)
               for c in chunks]
    found: dict[str, str] = {}
    for chunk, answer in zip(chunks, _ask(self._llm, prompts)):
      found.update(parse_mapping(answer, chunk, self.categories))
    return found, len(prompts)

  def __call__(self, labels: Sequence[str]) -> list[str]:
    distinct = list(dict.fromkeys(labels))
    found, prompts = self._round(distinct) if distinct else ({}, 0)
    missing = [l for l in distinct if l not in found]
    retried = len(missing) if self._retry else 0
    if missing and self._retry:
      extra, more = self._round(missing)
      found.update(extra)
      prompts += more
      missing = [l for l in distinct if l not in found]
    if missing:
      logging.warning("profile: the language model mapped %d of %d labels "
                      "to no category (e.g. %r): 'unknown'", len(missing),
                      len(distinct), missing[0])
    self.stats = {"labels": len(distinct), "prompts": prompts,
                  "retried": retried, "unmapped": len(missing)}
    return [found.get(l, UNKNOWN) for l in labels]


def load_llm(spec: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             batch_size: int = 8) -> Any:
  """A language model from a spec (see the module docstring).

  Args:
    spec: "package.module:function", a hub id "owner/name[@revision]" or a
      local directory of a Flax LM.
    max_new_tokens: answer length of a loaded model (a mapping of 40
      concepts takes a few hundred tokens).
    batch_size: prompts per forward pass of a loaded model.

  Returns:
    The callable; a loaded model is a dnd.models.Lazy, loaded on first use.
  """
  if not spec:
    raise ValueError("llm is empty; give package.module:function, a hub id "
                     "or a local directory of a Flax language model")
  if callables.is_spec(spec) and not os.path.exists(spec):
    return callables.import_callable(spec, "llm")
  name, revision = spec, None
  if "@" in spec and not os.path.exists(spec):
    name, revision = spec.rsplit("@", 1)
  return dnd_models.Lazy(
      lambda: dnd_models.FlaxTextGenerator.from_pretrained(
          name, revision=revision or None, max_new_tokens=max_new_tokens,
          batch_size=batch_size, use_chat_template=None),
      f"llm:{spec}:{max_new_tokens}")


def mapping_of(categorizer: Any) -> Mapping[str, int] | None:
  """A categorizer's stats, if it keeps any."""
  stats = getattr(categorizer, "stats", None)
  return dict(stats) if stats else None
