"""Stage 2: captions of a neuron's top images -> candidate concepts.

1. A captioner describes each of the neuron's top images (images ->
   captions); captions are cleaned of tokenizer debris (`clean_caption`).
2. A language model shortens each caption to a short concept
   (`SIMPLIFY_PROMPT`).
3. The language model summarizes the shortened captions into one concept
   of 1-5 words (`SUMMARIZE_PROMPT`), `num_candidates` times: first in the
   captions' order, then on seeded shuffles of them. An answer that still
   lists several comma-separated labels is sent back once to be merged
   (`MERGE_PROMPT`).
4. Candidates are lower-cased, final periods stripped, and a candidate
   ending in design(s)/graphic(s) also gets a "<candidate> background"
   variant (text-to-image models draw those words poorly on their own);
   duplicates are dropped, first occurrence kept (`clean_candidates`).

Models are plain callables: a captioner maps a list of PIL images to a
list of strings; a language model maps a prompt to its answer, and may
offer `batch(prompts) -> answers` to answer many prompts at once (the
default Flax models do). Prompts end with "Label:" so that instruction-tuned
and plain causal models both answer with the label; `parse_answer` keeps
the first line after any "something:" prefix, without quotes or a final
period. An empty answer is an error (ValueError), raised after the
neurons whose answers were fine have been saved.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np

from jax_dissect.store import integrity

Captioner = Callable[[list], list]
LLM = Callable[[str], str]

# Our own wording; the examples teach the format (a short noun phrase).
SIMPLIFY_PROMPT = (
    "Rewrite the image caption below as a concept label of 1 to 5 words "
    "that keeps the main thing the image shows and drops every other "
    "detail. Answer with the label only, without a period or quotes.\n"
    "Caption: a close up of a striped orange cat lying on a wooden floor\n"
    "Label: orange tabby cat\n"
    "Caption: a green pattern of leaves and leaves and leaves on a wall\n"
    "Label: green leaf pattern\n"
    "Caption: {caption}\n"
    "Label:")

SUMMARIZE_PROMPT = (
    "The descriptions below are of the images that most strongly activate "
    "one neuron of a vision network. Give one coherent concept label of 1 "
    "to 5 words that captures what most of them (not necessarily all) have "
    "in common. Do not just repeat one description. Answer with the label "
    "only, without a period or quotes.\n"
    "Descriptions: yellow taxi cab; school bus; yellow sports car; yellow "
    "road sign; banana bunch\n"
    "Label: yellow objects\n"
    "Descriptions: snowy mountain peak; ski slope; snowman; frozen lake; "
    "snow covered pine trees\n"
    "Label: snowy landscapes\n"
    "Descriptions: {descriptions}\n"
    "Label:")

MERGE_PROMPT = (
    "These labels were proposed for what one neuron of a vision network "
    "detects: {labels}. Merge them into one concept label of 1 to 5 words. "
    "Answer with the label only, without a period or quotes.\n"
    "Label:")

# Final words after which the original adds a "<c> background" candidate.
BACKGROUND_WORDS = ("design", "designs", "graphic", "graphics")

_DEBRIS = re.compile(r"<\s*\|?\s*(eos|bos|pad|endoftext|s|/s)\s*\|?\s*>|"
                     r"\[(CLS|SEP|PAD)\]|^\s*output\s*:\s*", re.IGNORECASE)


def clean_caption(caption: str) -> str:
  """A caption without special-token debris and quotes, spaces collapsed."""
  caption = _DEBRIS.sub(" ", caption)
  caption = caption.replace('"', "").replace("'", "")
  return " ".join(caption.split())


def parse_answer(answer: str) -> str:
  """The label in a language model's answer ("" if there is none).

  Keeps the first non-empty line, the text after its first colon (answers
  such as "Label: red cars"), without quotes, surrounding spaces, list
  markers or final periods.
  """
  if not isinstance(answer, str):
    raise ValueError(f"the language model returned {type(answer).__name__}, "
                     "not a string")
  lines = [line.strip() for line in answer.strip().splitlines()
           if line.strip()]
  if not lines:
    return ""
  label = lines[0]
  if ":" in label:
    label = label.split(":", 1)[1]
  label = label.strip().strip("\"'`*").strip()
  label = re.sub(r"^(\d+[.)]|[-*])\s+", "", label)
  return label.rstrip(".").strip()


def clean_candidates(labels: Sequence[str]) -> list[str]:
  """Lower-case, strip final periods, add background variants, dedupe.

  "<c> background" is appended (after all candidates) for every candidate
  whose last word is in BACKGROUND_WORDS; exact duplicates are dropped,
  the first kept.
  """
  cleaned = []
  for label in labels:
    label = " ".join(label.lower().split()).rstrip(".").strip()
    if label:
      cleaned.append(label)
  extra = [f"{c} background" for c in cleaned
           if c.split()[-1] in BACKGROUND_WORDS]
  return list(dict.fromkeys(cleaned + extra))


def ask(llm: LLM, prompts: Sequence[str]) -> list[str]:
  """Answers of `llm` to `prompts`, with its `batch` method if it has one."""
  prompts = list(prompts)
  if not prompts:
    return []
  batch = getattr(llm, "batch", None)
  answers = batch(prompts) if callable(batch) else [llm(p) for p in prompts]
  answers = list(answers)
  if len(answers) != len(prompts):
    raise ValueError(f"the language model's batch returned {len(answers)} "
                     f"answers for {len(prompts)} prompts")
  return answers


def caption_images(captioner: Captioner, images: Sequence[Any]) -> list[str]:
  """Cleaned captions of `images`; checks the captioner's output."""
  captions = list(captioner(list(images)))
  if len(captions) != len(images):
    raise ValueError(f"the captioner returned {len(captions)} captions for "
                     f"{len(images)} images")
  bad = [c for c in captions if not isinstance(c, str)]
  if bad:
    raise ValueError(f"the captioner returned {type(bad[0]).__name__} "
                     f"{bad[0]!r}, not a string")
  return [clean_caption(c) for c in captions]


def shuffled_orders(num: int, num_candidates: int, seed: int,
                    content: Any) -> list[list[int]]:
  """Orders of `num` items for each summary: as given, then shuffled.

  The shuffles are seeded by `seed` and a fingerprint of `content`, so the
  same captions always get the same orders.
  """
  digest = integrity.fingerprint(seed, content)
  rng = np.random.default_rng(int(digest[:16], 16))
  orders, order = [], list(range(num))
  for i in range(num_candidates):
    if i:
      order = [order[j] for j in rng.permutation(num)]
    orders.append(list(order))
  return orders


def summarize_prompts(simplified: Sequence[str], num_candidates: int,
                      seed: int) -> list[str]:
  """The `num_candidates` summary prompts of one neuron's short captions."""
  return [SUMMARIZE_PROMPT.format(descriptions="; ".join(
      simplified[j] for j in order)) for order in shuffled_orders(
          len(simplified), num_candidates, seed, list(simplified))]


def check_labels(answers: Sequence[str], what: str) -> list[str]:
  """Parsed labels; ValueError for the first empty one."""
  labels = [parse_answer(a) for a in answers]
  for answer, label in zip(answers, labels):
    if not label:
      raise ValueError(f"the language model returned an empty answer "
                       f"({answer!r}) to the {what} prompt; it must "
                       "answer with a label")
  return labels


def merge_lists(llm: LLM, labels: list[str]) -> list[str]:
  """Labels that still list several ideas "a, b, c" are merged once."""
  todo = [i for i, label in enumerate(labels) if "," in label]
  if not todo:
    return labels
  answers = ask(llm, [MERGE_PROMPT.format(labels=labels[i]) for i in todo])
  merged = check_labels(answers, "merge")
  out = list(labels)
  for i, label in zip(todo, merged):
    out[i] = label
  return out


# ---------------------------------------------------------------------------
# The stage, cached per neuron.


def model_identity(model: Any) -> str:
  """A cache id of a model callable.

  Its `identity` (a string, or a method returning one) if it has one, else
  "module:qualname" of the function or of the object's class. Give your
  plug-ins an `identity` that changes when their weights or settings do.
  """
  ident = getattr(model, "identity", None)
  if callable(ident):
    ident = ident()
  if isinstance(ident, str):
    return ident
  obj = model if hasattr(model, "__qualname__") else type(model)
  return f"{getattr(obj, '__module__', '?')}:{obj.__qualname__}"


def _run_chunked(units: Sequence[int], chunk: int,
                 compute: Callable[[list[int]], dict[int, Any]],
                 save: Callable[[int, Any], None]) -> None:
  """Calls compute on chunks of units and saves each neuron's result.

  compute returns {unit: value or ValueError}; good values are saved, then
  the first error (if any) is raised, so no finished neuron is lost.
  """
  first_error = None
  for start in range(0, len(units), chunk):
    results = compute(list(units[start:start + chunk]))
    for unit, value in results.items():
      if isinstance(value, ValueError):
        first_error = first_error or ValueError(f"unit {unit}: {value}")
      else:
        save(unit, value)
    if first_error is not None:
      raise first_error


def _cached_per_unit(store, keys: dict[int, str], chunk: int,
                     compute: Callable[[list[int]], dict[int, Any]]
                     ) -> dict[int, Any]:
  """{unit: JSON value} from the store, computing the missing ones."""
  out, todo = {}, []
  for unit, key in keys.items():
    value = store.get_json(key)
    if value is None:
      todo.append(unit)
    else:
      out[unit] = value

  def save(unit, value):
    store.put_json(keys[unit], value)
    out[unit] = value

  _run_chunked(todo, chunk, compute, save)
  return out


def caption_stage(captioner: Captioner, images: dict[int, list[Any]],
                  fingerprints: dict[int, list[str]], store, chunk: int
                  ) -> dict[int, list[str]]:
  """{unit: captions of its top images}, captioning a chunk at a time."""
  ident = model_identity(captioner)
  keys = {u: store.key("captions", captioner=ident, images=fingerprints[u])
          for u in images}

  def compute(units):
    flat = [im for u in units for im in images[u]]
    captions = caption_images(captioner, flat)
    out, pos = {}, 0
    for u in units:
      out[u] = captions[pos:pos + len(images[u])]
      pos += len(images[u])
    return out

  return _cached_per_unit(store, keys, chunk, compute)


def _answers_per_unit(llm: LLM, prompts: dict[int, list[str]], what: str,
                      merge: bool) -> dict[int, Any]:
  """{unit: labels or ValueError} for each unit's prompts, in one batch."""
  units = list(prompts)
  answers = ask(llm, [p for u in units for p in prompts[u]])
  out, pos = {}, 0
  for u in units:
    mine = answers[pos:pos + len(prompts[u])]
    pos += len(prompts[u])
    try:
      labels = check_labels(mine, what)
      out[u] = merge_lists(llm, labels) if merge else labels
    except ValueError as e:
      out[u] = e
  return out


def simplify_stage(llm: LLM, captions: dict[int, list[str]], store,
                   chunk: int) -> dict[int, list[str]]:
  """{unit: its captions shortened to concepts by the language model}."""
  ident = model_identity(llm)
  keys = {u: store.key("simplified", llm=ident, prompt=SIMPLIFY_PROMPT,
                       captions=captions[u]) for u in captions}

  def compute(units):
    prompts = {u: [SIMPLIFY_PROMPT.format(caption=c) for c in captions[u]]
               for u in units}
    return _answers_per_unit(llm, prompts, "simplify", merge=False)

  return _cached_per_unit(store, keys, chunk, compute)


def candidate_stage(llm: LLM, simplified: dict[int, list[str]],
                    num_candidates: int, seed: int, store, chunk: int
                    ) -> dict[int, dict[str, list[str]]]:
  """{unit: {"answers": raw labels, "candidates": cleaned candidates}}."""
  ident = model_identity(llm)
  keys = {u: store.key("candidates", llm=ident, prompt=SUMMARIZE_PROMPT,
                       merge=MERGE_PROMPT, simplified=simplified[u],
                       num_candidates=num_candidates, seed=seed)
          for u in simplified}

  def compute(units):
    prompts = {u: summarize_prompts(simplified[u], num_candidates, seed)
               for u in units}
    labels = _answers_per_unit(llm, prompts, "summarize", merge=True)
    return {u: v if isinstance(v, ValueError) else
            {"answers": v, "candidates": clean_candidates(v)}
            for u, v in labels.items()}

  return _cached_per_unit(store, keys, chunk, compute)
