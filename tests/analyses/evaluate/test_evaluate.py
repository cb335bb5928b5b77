"""Evaluation against class names on synthetic results with known answers."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect import similarity
from jax_dissect.analyses import evaluate as evaluate_analysis
from jax_dissect.analyses.evaluate import metrics as evaluate
from jax_dissect.clip import text_embed
from jax_dissect.store import results as results_lib
from tests import helpers
from tests.helpers import synthetic_run as synth


@pytest.fixture(scope="module")
def world():
  w = synth.make_world()
  # Miswire one class neuron: fc unit 7 fires on class 3 (pizza) instead of 7.
  fc = w["activations"]["fc"]
  fc[:, 7] = fc[:, 3] + 0.01 * np.arange(len(fc))
  return w


@pytest.fixture(scope="module")
def results(world, tmp_path_factory):
  path = synth.write_results(str(tmp_path_factory.mktemp("res")), world)
  return results_lib.load_run(path)


def test_load_results(results, world):
  assert results.layers == ["layer4", "fc"]
  assert results.similarity_fn == "soft_wpmi"
  assert results.similarity_kwargs == {"top_k": 10}
  assert results.concepts == world["concepts"]
  assert results.activations("fc").shape == (96, 8)
  assert [n.unit for n in results.layer_neurons("fc")] == list(range(8))
  with pytest.raises(ValueError, match="layer 'layer9'.*layers:"):
    results.layer_neurons("layer9")


def test_load_results_csv_only_and_relative_arrays(world, tmp_path):
  path = synth.write_results(str(tmp_path), world, relative_arrays=True)
  # As the reference implementation writes: descriptions.csv, no manifest.
  os.remove(os.path.join(path, "neurons.jsonl"))
  os.remove(os.path.join(path, "manifest.json"))
  r = results_lib.load_run(path)
  assert len(r.neurons) == 16 and r.neurons[0].alternatives == ()
  assert r.concept_activations().shape == (96, len(world["concepts"]))
  with pytest.raises(FileNotFoundError, match="neither"):
    results_lib.load_run(str(tmp_path / "cache"))


def test_class_name_ranks_and_accuracy():
  concepts = ["cat", "Dog ", "car", "tree"]
  s = np.array([[0.9, 0.1, 0.0, 0.0],   # cat: rank 0
                [0.5, 0.4, 0.9, 0.0],   # dog: rank 2
                [0.0, 0.0, 0.1, 0.2]])  # car: rank 1
  ranks = evaluate.class_name_ranks(s, concepts, ["cat", "dog", "car"])
  np.testing.assert_array_equal(ranks, [0, 2, 1])
  assert evaluate.top_k_accuracy(ranks, 1) == pytest.approx(1 / 3)
  assert evaluate.top_k_accuracy(ranks, 2) == pytest.approx(2 / 3)
  # A tie goes to the lower concept index, as the label's argmax: a class
  # name tied with an earlier concept is not the label.
  tied = np.array([[0.5, 0.5, 0.0, 0.0]] * 2 + [[0.0, 0.0, 0.1, 0.2]])
  np.testing.assert_array_equal(
      evaluate.class_name_ranks(tied, concepts, ["cat", "dog", "car"]),
      [0, 1, 1])
  missing = evaluate.class_name_ranks(s, concepts, ["cat", "dog", "bus"])
  assert missing[2] == -1
  with pytest.raises(ValueError, match="not in the concept set"):
    evaluate.top_k_accuracy(missing, 1)
  with pytest.raises(ValueError, match="2 class names"):
    evaluate.class_name_ranks(s, concepts, ["cat", "dog"])


def test_label_cosines():
  cos = evaluate.label_cosines(["tabby cat", "car"], ["tabby cat", "dog"],
                               synth.fake_embed)
  assert cos[0] == pytest.approx(1.0, abs=1e-5)
  assert abs(cos[1]) < 0.6


def test_evaluate_layer_planted_and_all_kernels(results, world):
  embedders = {"clip": text_embed.cached_embedder(
      world["concepts"], world["text_embeddings"]), "bow": synth.fake_embed}
  table, rows = evaluate_analysis.evaluate_layer(
      results, "fc", list(synth.CLASSES),
      similarity_names=similarity.names(), embedders=embedders,
      kernel_overrides={"wpmi": {"top_k": 10}})
  assert [t["similarity_fn"] for t in table] == similarity.names()
  soft = table[0]
  # 7 class neurons fire on their class; unit 7 fires on pizza images.
  assert soft["top1"] == pytest.approx(7 / 8)
  assert soft["n_classes_in_concepts"] == 8
  assert soft["cos_clip"] < 1.0 and soft["cos_bow"] < 1.0
  unit7 = [r for r in rows if r["similarity_fn"] == "soft_wpmi"
           and r["unit"] == 7][0]
  assert unit7["label"] == "pizza" and unit7["class_name"] == "umbrella"
  assert unit7["rank"] > 0
  for r in rows:
    if r["unit"] != 7 and r["similarity_fn"] == "soft_wpmi":
      assert r["rank"] == 0 and r["cos_clip"] == pytest.approx(1.0, abs=1e-5)
  for t in table:
    assert 0.0 <= t["top1"] <= t["top5"] <= 1.0, t
    # rank_reorder only looks at the top 5% (4 images, all of one class here),
    # so it cannot tell the class concept from the others: no claim on it.
    if t["similarity_fn"] != "rank_reorder":
      assert t["top1"] >= 6 / 8, t
  output = results_lib.AnalysisOutput("evaluate", tables={
      "evaluation": results_lib.Table(table, json=True)})
  paths = results_lib.write_analysis(output, results.analysis_dir())
  with open(paths["evaluation.json"]) as f:
    assert json.load(f)[0]["top1"] == pytest.approx(7 / 8)
  text = evaluate.format_table(table)
  assert "soft_wpmi" in text and "0.8750" in text


def test_evaluate_without_class_names_in_concepts(results, world):
  names = ["orange goldfish"] + list(synth.CLASSES[1:])
  table, _ = evaluate_analysis.evaluate_layer(
      results, "fc", names, embedders={"bow": synth.fake_embed})
  assert table[0]["top1"] is None and table[0]["n_classes_in_concepts"] == 7
  assert 0.5 < table[0]["cos_bow"] < 1.0


def test_evaluate_bad_input(results):
  with pytest.raises(ValueError, match="unknown similarity function 'bogus'"):
    evaluate_analysis.evaluate_layer(results, "fc", list(synth.CLASSES),
                                     similarity_names=["bogus"])
  with pytest.raises(ValueError, match="8 neurons but 3 class names"):
    evaluate_analysis.evaluate_layer(results, "fc", ["a", "b", "c"])


def test_read_class_names(tmp_path):
  p = tmp_path / "names.txt"
  p.write_text("cat\ndog\n\n")
  assert evaluate.read_class_names(p) == ["cat", "dog"]
  p.write_text("cat\n\ndog\n")
  with pytest.raises(ValueError, match="one non-empty name per line"):
    evaluate.read_class_names(p)


def test_cached_embedder_fallback():
  emb = synth.fake_embed(["a", "b"])
  fn = text_embed.cached_embedder(["a", "b"], emb, fallback=synth.fake_embed)
  out = fn(["b", "zzz", "a"])
  np.testing.assert_allclose(out[0], emb[1], atol=1e-6)
  np.testing.assert_allclose(out[1], synth.fake_embed(["zzz"])[0], atol=1e-6)
  with pytest.raises(ValueError, match="not in the cached embeddings"):
    text_embed.cached_embedder(["a", "b"], emb)(["zzz"])


def test_sentence_transformer_missing_extra(monkeypatch):
  import builtins  # pylint: disable=g-import-not-at-top
  real_import = builtins.__import__

  def fake_import(name, *args, **kwargs):
    if name == "sentence_transformers":
      raise ImportError("no module")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", fake_import)
  with pytest.raises(ImportError, match=r"\.\[sentence\]"):
    text_embed.sentence_transformer_embedder()


def test_sentence_transformer_embedder_local_dir(tmp_path):
  """Runs in a fresh process: transformers must be imported with torch on."""
  if importlib.util.find_spec("sentence_transformers") is None:
    pytest.skip("optional extra 'sentence' (sentence-transformers) not "
                "installed")
  env = dict(os.environ, USE_TORCH="1")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, "-c", _SENTENCE_CHECK, str(tmp_path)], env=env,
      cwd=helpers.REPO,
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "sentence embedder ok" in result.stdout


def test_sentence_transformer_with_torch_off_says_why():
  """A process that turned PyTorch off (as the entry points do) is told so."""
  if importlib.util.find_spec("sentence_transformers") is None:
    pytest.skip("optional extra 'sentence' not installed")
  code = ("from jax_dissect.clip import text_embed\n"
          "try:\n"
          "  text_embed.sentence_transformer_embedder('some/model')\n"
          "except RuntimeError as e:\n"
          "  print('said:', e)\n")
  env = dict(os.environ, USE_TORCH="0")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=helpers.REPO)
  assert "said:" in result.stdout and "USE_TORCH=0" in result.stdout, (
      result.stdout + result.stderr[-2000:])


_SENTENCE_CHECK = r"""
import sys
import numpy as np
import sentence_transformers as st
import transformers
from jax_dissect.analyses.evaluate import metrics as evaluate
from jax_dissect.clip import text_embed
tmp = sys.argv[1]
words = ["cat", "dog", "tabby", "car", "red", "fire", "truck"]
with open(f"{tmp}/vocab.txt", "w") as f:
  f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words))
bert_dir = f"{tmp}/bert"
transformers.BertTokenizerFast(vocab_file=f"{tmp}/vocab.txt").save_pretrained(
    bert_dir)
config = transformers.BertConfig(
    vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1,
    num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
transformers.BertModel(config).save_pretrained(bert_dir)
word = st.models.Transformer(bert_dir, max_seq_length=16)
pool = st.models.Pooling(word.get_word_embedding_dimension(), "mean")
st.SentenceTransformer(modules=[word, pool], device="cpu").save(f"{tmp}/st")
embed = text_embed.sentence_transformer_embedder(f"{tmp}/st", device="cpu")
out = embed(["tabby cat", "fire truck", "tabby cat"])
assert out.shape == (3, 16) and out.dtype == np.float32
np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
np.testing.assert_allclose(out[0], out[2], atol=1e-6)
cos = evaluate.label_cosines(["tabby cat"], ["tabby cat"], embed)
assert abs(cos[0] - 1.0) < 1e-5
print("sentence embedder ok")
"""


def test_accuracy_over_the_classes_in_the_concept_set(results):
  """Table 2's accuracy: over the neurons whose class name is a concept
  (the miswired unit 7 is one of them, the renamed unit 0 is not)."""
  names = ["orange goldfish"] + list(synth.CLASSES[1:])
  table, _ = evaluate_analysis.evaluate_layer(results, "fc", names)
  assert table[0]["top1"] is None
  assert table[0]["top1_present"] == pytest.approx(6 / 7)
  assert table[0]["top5_present"] >= table[0]["top1_present"]


def test_evaluate_reads_dnd_descriptions(results, tmp_path):
  """Describe-and-Dissect's dnd.csv scored against the class names, beside
  the run's kernel on the same units."""
  rows = [("0", "goldfish", "", ""), ("1", "Tabby  Cat", "", ""),
          ("2", "truck", "fire truck", "red"), ("3", "sky", "", ""),
          ("4", "volcano", "", "")]
  analysis = results.analysis_dir()
  os.makedirs(analysis, exist_ok=True)
  with open(os.path.join(analysis, "dnd.csv"), "w") as f:
    f.write("layer,unit,description,label_2,label_3,candidates,score\n")
    f.write("layer4,0,sky,,,,0.1\n")  # Another layer: not read.
    for unit, *labels in rows:
      f.write(f"fc,{unit},{','.join(labels)},,0.5\n")
  names = tmp_path / "classes.txt"
  names.write_text("\n".join(synth.CLASSES) + "\n")
  out = evaluate_analysis.run(results, _config(
      class_names=str(names), descriptions="dnd", layer="fc",
      text_embed_fn="tests.helpers.synthetic_run:fake_embed"))
  table = out.tables["evaluation"].rows
  assert [t["similarity_fn"] for t in table] == [
      "soft_wpmi", "soft_wpmi (same units)", "dnd"]
  dnd = table[2]
  assert dnd["n_neurons"] == 5
  assert dnd["top1"] == pytest.approx(2 / 5)  # goldfish, tabby cat.
  assert dnd["top3"] == pytest.approx(3 / 5)  # and fire truck, 2nd label.
  assert table[1]["n_neurons"] == 5 and table[1]["top1"] == 1.0
  assert table[1]["cos_clip"] > dnd["cos_clip"]  # Exact labels vs misses.
  per = [r for r in out.tables["evaluation_neurons"].rows
         if r["similarity_fn"] == "dnd"]
  assert [r["exact"] for r in per] == [True, True, False, False, False]
  with pytest.raises(FileNotFoundError, match="descriptions file"):
    evaluate_analysis.run(results, _config(
        class_names=str(names), descriptions=str(tmp_path / "none.csv"),
        layer="fc", text_embedder="none"))


def _config(**overrides):
  return analyses.make_config("evaluate", overrides)
