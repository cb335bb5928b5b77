"""The profiling paper's categorizer: one-shot prompt, batches of labels, a
JSON mapping back; with a scripted model and a tiny random Flax LLM."""

import json
import math

import pytest

from jax_dissect import analyses
from jax_dissect.analyses.profile import layer_profile
from jax_dissect.analyses.profile import llm_mapping
from jax_dissect.store import results as results_lib
from tests.helpers import dnd_models
from tests.helpers import synthetic_run as synth

CATS = layer_profile.DEFAULT_CATEGORIES
TRUTH = {"goldfish": "object", "tabby cat": "object", "fire truck": "object",
         "pizza": "object", "lighthouse": "scene", "volcano": "scene",
         "zebra": "object", "umbrella": "object", "red": "color",
         "blue": "color", "green": "color", "striped": "texture",
         "wooden": "material", "metal": "material", "grass": "scene",
         "sky": "scene", "wheel": "part", "leg": "part", "forest": "scene",
         "kitchen": "scene"}


class ScriptedLLM:
  """Answers the last 'Concepts:' line of a prompt with TRUTH as JSON,
  leaving out `drop` concepts the first time it sees them."""

  def __init__(self, drop=(), style="json"):
    self.prompts, self.drop, self.style = [], set(drop), style
    self.seen = set()

  def __call__(self, prompt):
    self.prompts.append(prompt)
    line = [l for l in prompt.splitlines() if l.startswith("Concepts:")][-1]
    concepts = [c.strip() for c in line.split(":", 1)[1].split(",")]
    answer = {}
    for c in concepts:
      if c in self.drop and c not in self.seen:
        self.seen.add(c)
        continue
      answer[c] = TRUTH.get(c, "unknown")
    if self.style == "paper":  # Doubled braces, as the paper's figure.
      return "Sure! {{" + json.dumps(answer)[1:-1] + "}} Hope this helps."
    return json.dumps(answer)


def test_prompt_has_the_worked_example_and_the_concepts():
  prompt = llm_mapping.build_prompt(["goldfish", "red"], CATS)
  example = json.dumps(dict(llm_mapping.EXAMPLE))
  assert example in prompt
  assert prompt.rstrip().endswith("Concepts: goldfish, red\nCategories: "
                                  + ", ".join(CATS) + "\nAnswer:")
  # Categories the user leaves out leave the example too.
  short = llm_mapping.build_prompt(["x"], ("object", "unknown"))
  assert '"bicycle": "object"' in short and "crimson" not in short


@pytest.mark.parametrize("answer", [
    '{"Goldfish": "object", "red ": "Color", "leg": "limb"}',
    'Here: {{"goldfish": "object", "red": "color", "leg": "limb",}} done',
    "{'goldfish': 'object', 'red': 'color'}",
    'text "goldfish": "object", and "red": "color" (no braces)',
])
def test_parse_mapping_is_lenient_but_checks_categories(answer):
  got = llm_mapping.parse_mapping(answer, ["goldfish", "red", "leg"], CATS)
  assert got == {"goldfish": "object", "red": "color"}  # "limb" dropped.


def test_batches_retry_and_unknown():
  labels = list(TRUTH) + ["goldfish", "red"]  # Repeats are asked once.
  llm = ScriptedLLM(drop=("zebra", "sky"))
  cat = llm_mapping.MappingLLMCategorizer(llm, CATS, batch_size=6)
  got = cat(labels)
  assert got == [TRUTH[l] for l in labels]
  assert len(llm.prompts) == math.ceil(20 / 6) + 1  # One retry prompt.
  assert cat.stats == {"labels": 20, "prompts": 5, "retried": 2,
                       "unmapped": 0}
  # Without the retry the dropped labels are unknown; the paper's doubled
  # braces parse.
  llm = ScriptedLLM(drop=("zebra",), style="paper")
  cat = llm_mapping.MappingLLMCategorizer(llm, CATS, batch_size=50,
                                          retry=False)
  got = dict(zip(TRUTH, cat(list(TRUTH))))
  assert got["zebra"] == "unknown" and got["red"] == "color"
  assert cat.stats["unmapped"] == 1 and len(llm.prompts) == 1
  with pytest.raises(ValueError, match="needs 'unknown'"):
    llm_mapping.MappingLLMCategorizer(llm, ("object", "scene"))


def test_profile_with_a_scripted_llm(tmp_path, monkeypatch):
  path = synth.write_results(str(tmp_path / "run"), synth.make_world())
  run = results_lib.load_run(path)
  llm = ScriptedLLM()
  monkeypatch.setattr(dnd_models, "scripted", llm, raising=False)
  out = analyses.run("profile", run, categorizer="llm_json",
                     llm="tests.helpers.dnd_models:scripted",
                     llm_batch_size=8)
  rows = out.tables["profile_neurons"].rows
  assert all(r["category"] == TRUTH[r["description"]] for r in rows)
  assert out.documents["profile"]["categorizer_stats"]["unmapped"] == 0
  assert len(llm.prompts) == math.ceil(len({r["description"] for r in rows})
                                       / 8)


def test_tiny_flax_llm_by_directory(tmp_path):
  """A language model named by a local directory (as by a hub id) loads and
  answers; a random model writes no JSON, so every label is 'unknown' and
  the stats say so."""
  llm = dnd_models.tiny_llm()
  llm.model.save_pretrained(tmp_path / "llm", params=llm.params)
  llm.tokenizer.save_pretrained(tmp_path / "llm")
  path = synth.write_results(str(tmp_path / "run"), synth.make_world())
  run = results_lib.load_run(path)
  out = analyses.run("profile", run, categorizer="llm_json",
                     llm=str(tmp_path / "llm"), llm_batch_size=4,
                     llm_max_new_tokens=12)
  rows = out.tables["profile_neurons"].rows
  stats = out.documents["profile"]["categorizer_stats"]
  distinct = len({r["description"] for r in rows})
  assert stats["labels"] == distinct
  assert stats["prompts"] == 2 * math.ceil(distinct / 4)  # With the retry.
  assert {r["category"] for r in rows} == {"unknown"}
  assert stats["unmapped"] == distinct


def test_bad_options(tmp_path):
  path = synth.write_results(str(tmp_path / "run"), synth.make_world())
  run = results_lib.load_run(path)
  with pytest.raises(ValueError, match="categorizer=llm_json needs llm="):
    analyses.run("profile", run, categorizer="llm_json")
  with pytest.raises(ValueError, match="llm_batch_size"):
    analyses.run("profile", run, categorizer="llm_json", llm="a/b",
                 llm_batch_size=0)
