"""Layer profiles: categorizers, percentages, tau curve, charts."""

import json

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect.analyses.profile import layer_profile as profile
from jax_dissect.store import results as results_lib
from tests.helpers import synthetic_run as synth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _neurons():
  rows = [("layer1", "red", 0.30), ("layer1", "striped", 0.20),
          ("layer1", "blue", 0.10), ("layer1", "wheel", 0.05),
          ("layer4", "zebra", 0.40), ("layer4", "kitchen", 0.25),
          ("layer4", "wheel", 0.17), ("layer4", "pizza", 0.12)]
  return [results_lib.Neuron(l, i % 4, d, s)
          for i, (l, d, s) in enumerate(rows)]


TABLE = {"red": "color", "blue": "color", "striped": "texture",
         "wheel": "part", "zebra": "object", "kitchen": "scene",
         "pizza": "object"}


def test_table_categorizer_profile_percentages():
  cat = profile.TableCategorizer(TABLE)
  p = profile.profile_neurons(_neurons(), cat, tau=0.16)
  l1, l4 = p.layers
  assert (l1["layer"], l1["n_neurons"], l1["n_interpretable"]) == ("layer1",
                                                                   4, 2)
  assert l1["percent_color"] == 25.0 and l1["percent_texture"] == 25.0
  assert l1["percent_part"] == 0.0  # wheel's score 0.05 <= tau
  assert l4["n_interpretable"] == 3 and l4["percent_object"] == 25.0
  assert l4["percent_scene"] == 25.0 and l4["percent_part"] == 25.0
  for row in p.layers:
    total = sum(row[f"percent_{c}"] for c in p.categories)
    assert total == pytest.approx(100 * row["interpretable_fraction"])
  # Interpretable fraction vs tau: monotone non-increasing, 1 -> 0.
  for curve in p.interpretable_vs_tau.values():
    assert np.all(np.diff(curve) <= 0)
  assert p.taus[0] == 0.05  # the grid spans the scores of all layers
  assert p.interpretable_vs_tau["layer1"][0] == 0.75  # 0.05 is not > 0.05
  assert p.interpretable_vs_tau["layer4"][0] == 1.0
  assert p.interpretable_vs_tau["layer1"][-1] == 0.0


def test_table_file_and_errors(tmp_path):
  f = tmp_path / "cats.tsv"
  f.write_text("# Broden-style\nlabel\tcategory\nRed\tcolor\n"
               "wooden\tmaterial\n")
  cat = profile.TableCategorizer.from_file(f)
  assert cat(["red", "Wooden ", "zebra"]) == ["color", "material", "unknown"]
  f2 = tmp_path / "cats.csv"
  f2.write_text('"car, sports",object\n')
  assert profile.TableCategorizer.from_file(f2)(["car, sports"]) == ["object"]
  with pytest.raises(ValueError, match=r"categories \['animal'\].*allowed"):
    profile.TableCategorizer({"cat": "animal"})
  f.write_text("justonecolumn\n")
  with pytest.raises(ValueError, match="line 1"):
    profile.TableCategorizer.from_file(f)
  # Issue 25: a binary file gave a codec error naming no file.
  binary = tmp_path / "table.bin"
  binary.write_bytes(bytes(range(256)) * 4)
  with pytest.raises(ValueError) as e:
    profile.TableCategorizer.from_file(binary)
  message = str(e.value)
  assert message.startswith(f"category_table {str(binary)!r} is not UTF-8")
  assert len(message) <= 300


def test_clip_zero_shot_categorizer():
  prompts = {"color": ("red", "blue", "green"), "scene": ("kitchen", "forest"),
             "object": ("zebra", "pizza")}
  cat = profile.ClipZeroShotCategorizer(
      synth.fake_embed, categories=("object", "scene", "color", "unknown"),
      prompts=prompts)
  assert cat(["red", "forest", "zebra"]) == ["color", "scene", "object"]
  strict = profile.ClipZeroShotCategorizer(
      synth.fake_embed, categories=("object", "scene", "color", "unknown"),
      prompts=prompts, min_cosine=0.999)
  assert strict(["red", "lighthouse"]) == ["unknown", "unknown"]
  default = profile.ClipZeroShotCategorizer(synth.fake_embed)
  assert set(default(["red", "zebra"])) <= set(profile.DEFAULT_CATEGORIES)


def test_llm_categorizer_prompt_and_parsing():
  prompts = []

  def llm(prompt):
    prompts.append(prompt)
    label = prompt.split("Concept: ")[1].split("\n")[0]
    return {"red": "Color.", "zebra": "It is an OBJECT",
            "kitchen": "hmm"}[label]

  cat = profile.LLMCategorizer(llm)
  assert cat(["red", "zebra", "red", "kitchen"]) == ["color", "object",
                                                     "color", "unknown"]
  assert len(prompts) == 3  # one call per distinct label
  assert "object, part, scene, material, texture, color, unknown" in prompts[0]
  assert cat.parse("scene or maybe object") == "scene"
  with pytest.raises(ValueError, match="must contain {label}"):
    profile.LLMCategorizer(llm, prompt_template="no placeholder")


def test_profile_analysis_default_tau_and_files(tmp_path):
  path = synth.write_results(str(tmp_path / "res"), synth.make_world())
  results = results_lib.load_run(path)
  table = tmp_path / "table.tsv"
  table.write_text("".join(f"{c}\tobject\n" for c in synth.CLASSES) +
                   "red\tcolor\nblue\tcolor\ngrass\tmaterial\n")
  output = analyses.run("profile", results, categorizer="table",
                        category_table=str(table))
  layers = output.tables["profile"].rows
  assert [r["layer"] for r in layers] == ["layer4", "fc"]
  assert layers[1]["percent_object"] == 100.0  # fc: all class names
  paths = results_lib.write_analysis(output, str(tmp_path / "out"))
  for key in ("profile.png", "interpretable_vs_tau.png"):
    with open(paths[key], "rb") as f:
      assert f.read(8) == PNG_MAGIC
  with open(paths["profile.json"]) as f:
    data = json.load(f)
  assert data["tau"] == 0.16 and len(data["layers"]) == 2
  with open(paths["profile.csv"]) as f:
    assert f.readline().startswith("layer,n_neurons,n_interpretable")
  # The CLIP zero-shot categorizer, with a custom embedder, and bad options.
  output = analyses.run("profile", results,
                        text_embed_fn="tests.helpers.synthetic_run:fake_embed",
                        tau=0.0, layers=("fc",))
  assert output.tables["profile"].rows[0]["n_interpretable"] == 8
  for bad, match in ((dict(tau=float("nan")), "tau=nan must be a finite"),
                     (dict(categorizer="gpt"), "categorizer='gpt'"),
                     (dict(categorizer="table"), "needs category_table"),
                     (dict(layers=("fc9",)), "layer 'fc9' is not in")):
    with pytest.raises(ValueError, match=match):
      analyses.run("profile", results, **bad)


def test_default_tau_unknown_function():
  with pytest.raises(ValueError, match="no published tau.*'wpmi'"):
    profile.default_tau("wpmi")
