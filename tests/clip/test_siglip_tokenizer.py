"""Tokenization of jax_dissect.clip.siglip.load against transformers' processor.

A tiny SentencePiece model is trained here on the 20k concepts (offline),
wrapped as a SiglipTokenizer and saved; the loader's path (AutoTokenizer
from the directory, padding to max_position_embeddings) must give the ids
transformers' SiglipProcessor gives with padding="max_length" for every
concept. A Gemma tokenizer (SigLIP 2's kind) gets texts lowercased first.
"""

import shutil

import numpy as np
import pytest

from jax_dissect.clip.siglip import load
from tests.helpers import siglip as siglip_testing

MAX_LEN = 16


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
  import transformers  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("siglip_tok")
  siglip_testing.train_sentencepiece(out / "spm.model", 500)
  transformers.SiglipTokenizer(
      vocab_file=str(out / "spm.model"), model_max_length=MAX_LEN
  ).save_pretrained(out / "saved")
  return str(out / "saved")


def test_tokenize_equals_siglip_processor_on_20k_concepts(siglip_dir):
  import transformers  # pylint: disable=g-import-not-at-top
  texts = siglip_testing.concepts()
  assert len(texts) == 20000
  tokenizer = load.load_tokenizer(siglip_dir, "siglip")
  assert type(tokenizer).__name__ == "SiglipTokenizer"
  assert not load.default_lowercase(tokenizer)  # It lowercases itself.
  mine = load.tokenize(tokenizer, texts, MAX_LEN,
                       load.default_lowercase(tokenizer))
  processor = transformers.SiglipProcessor(
      image_processor=transformers.SiglipImageProcessor(),
      tokenizer=transformers.SiglipTokenizer.from_pretrained(siglip_dir))
  ref = processor(text=texts, padding="max_length", truncation=True)[
      "input_ids"]
  assert mine.shape == (len(texts), MAX_LEN) and mine.dtype == np.int32
  np.testing.assert_array_equal(mine, np.asarray(ref))
  # Each row: pieces, </s> (1), then padding with </s> as SigLIP does.
  eos = tokenizer.eos_token_id
  assert eos == 1 and tokenizer.pad_token_id == eos
  assert np.all(mine[:, -1] == eos)
  # Not vacuous: most concepts differ, and case/punctuation do not matter.
  assert len({tuple(r) for r in mine}) > 0.95 * len(texts)
  upper = load.tokenize(tokenizer, [t.upper() + "!" for t in texts[:200]],
                        MAX_LEN)
  np.testing.assert_array_equal(upper, mine[:200])


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
  """A saved slow GemmaTokenizer (tokenizer.model) of the 20k concepts."""
  import transformers  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("gemma_tok")
  siglip_testing.train_sentencepiece(out / "gemma.model", 300, gemma=True)
  transformers.GemmaTokenizer(vocab_file=str(out / "gemma.model")
                              ).save_pretrained(out / "saved")
  return out / "saved"


def test_gemma_tokenizer_gets_lowercased_texts(gemma_dir):
  """SigLIP 2 checkpoints ship a case-keeping Gemma tokenizer; the loader
  lowercases first (the training text was lowercased), unless told not to.
  """
  tokenizer = load.load_tokenizer(str(gemma_dir), "siglip2")
  assert type(tokenizer).__name__.startswith("Gemma")
  assert load.default_lowercase(tokenizer)
  lower = load.tokenize(tokenizer, ["golden retriever"], MAX_LEN, True)
  mixed = load.tokenize(tokenizer, ["Golden RETRIEVER"], MAX_LEN, True)
  kept = load.tokenize(tokenizer, ["Golden RETRIEVER"], MAX_LEN, False)
  np.testing.assert_array_equal(mixed, lower)
  assert not np.array_equal(kept, lower)
  assert mixed.shape == (1, MAX_LEN)


def test_missing_gemma_tokenizer_file_is_one_line(gemma_dir, tmp_path):
  saved = tmp_path / "saved"
  shutil.copytree(gemma_dir, saved)
  (saved / "tokenizer.model").unlink()
  with pytest.raises(load.SiglipLoadError) as err:
    load.load_tokenizer(str(saved), "siglip2")
  message = str(err.value)
  assert "GemmaTokenizer needs tokenizer.model or tokenizer.json" in message
  assert "\n" not in message
