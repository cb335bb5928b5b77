"""Shared helpers of the SigLIP tests: tiny SentencePiece models trained
offline on the 20k concepts (no download)."""

import io

from configs import shared_data

CONCEPTS = shared_data.path("concepts", "20k.txt")


def concepts() -> list[str]:
  """The 20k concept set's non-blank lines, stripped."""
  with open(CONCEPTS, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def train_sentencepiece(path, vocab_size: int, *, gemma: bool = False
                        ) -> None:
  """Writes a unigram SentencePiece model of the 20k concepts to `path`.

  Special pieces as SigLIP's spiece.model (<pad> 0, </s> 1, <unk> 2, no
  <s>) or, with gemma=True, as Gemma's (<pad> 0, <eos> 1, <bos> 2, <unk> 3).
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  if gemma:
    special = {"pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3,
               "pad_piece": "<pad>", "eos_piece": "<eos>",
               "bos_piece": "<bos>", "unk_piece": "<unk>"}
  else:
    special = {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1,
               "pad_piece": "<pad>", "eos_piece": "</s>", "unk_piece": "<unk>"}
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(concepts()), model_writer=model,
      vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
      hard_vocab_limit=False, num_threads=1, minloglevel=2, **special)
  with open(path, "wb") as f:
    f.write(model.getvalue())


# A tiny SigLIP (2 layers of width 32 on 32x32 images, patch 8; texts of 16
# tokens from a 400-piece vocabulary) as a config.json dict.
VOCAB = 400
MAX_LEN = 16
TINY_TOWER = {"hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_CONFIG = {
    "model_type": "siglip",
    "vision_config": {**TINY_TOWER, "image_size": 32, "patch_size": 8},
    "text_config": {**TINY_TOWER, "vocab_size": VOCAB,
                    "max_position_embeddings": MAX_LEN}}


def write_tokenizer(out_dir) -> str:
  """A SiglipTokenizer (spiece.model trained here on the 20k concepts)
  saved in `out_dir`; returns the directory."""
  import os  # pylint: disable=g-import-not-at-top

  import transformers  # pylint: disable=g-import-not-at-top
  out_dir = str(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  model = os.path.join(out_dir, "spm.model")
  train_sentencepiece(model, VOCAB)
  transformers.SiglipTokenizer(vocab_file=model, model_max_length=MAX_LEN
                               ).save_pretrained(out_dir)
  os.remove(model)
  return out_dir


def write_tiny_siglip(out_dir, tokenizer_dir, seed: int = 0,
                      config=None) -> str:
  """A random tiny SigLIP saved as a checkpoint directory (config.json,
  model.safetensors, tokenizer, preprocessor_config.json); returns it."""
  from jax_dissect.clip.siglip import embedder  # pylint: disable=g-import-not-at-top
  from jax_dissect.clip.siglip import load  # pylint: disable=g-import-not-at-top
  tokenizer = load.load_tokenizer(str(tokenizer_dir), "siglip")
  siglip = embedder.SiglipEmbedder.random(config or TINY_CONFIG, tokenizer,
                                          seed=seed, devices=1)
  return siglip.save_pretrained(str(out_dir))
