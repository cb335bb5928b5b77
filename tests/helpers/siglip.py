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
