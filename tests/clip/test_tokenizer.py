"""The CLIP tokenizer built from OpenAI's BPE file: errors that name the
file and the option, and a failed save that leaves nothing behind."""

import gzip
import os

import pytest

from jax_dissect.clip import tokenizer as tokenizer_lib
from tests.helpers import pipeline_config


def test_a_file_that_is_not_gzip_names_the_option_and_the_file(tmp_path):
  """Issue 25: gzip's error named neither the flag nor the file."""
  path = tmp_path / "vocab.txt"
  path.write_text("#version: 0.2\nh e\n")
  with pytest.raises(ValueError) as e:
    tokenizer_lib.tokenizer_dir_from_bpe(path, tmp_path / "work")
  message = str(e.value)
  assert message.startswith(f"clip_tokenizer {str(path)!r} is not gzip")
  assert "bpe_simple_vocab_16e6.txt.gz" in message and len(message) <= 300
  binary = tmp_path / "binary.gz"
  with gzip.open(binary, "wb") as f:
    f.write(b"\xff\xfe\x00 not utf-8")
  with pytest.raises(ValueError, match="is not gzipped UTF-8 text"):
    tokenizer_lib.tokenizer_dir_from_bpe(binary, tmp_path / "work")


def test_a_full_disk_while_saving_is_one_line_and_leaves_nothing(
    tmp_path, monkeypatch):
  """Issue 25: the tokenizers library reports a full disk as a plain
  Exception ('No space left on device (os error 28)'): a traceback."""
  transformers = pytest.importorskip("transformers")

  def full_disk(self, *args, **kwargs):
    raise Exception("No space left on device (os error 28)")  # pylint: disable=broad-exception-raised

  monkeypatch.setattr(transformers.CLIPTokenizerFast, "save_pretrained",
                      full_disk)
  work = tmp_path / "work"
  with pytest.raises(OSError) as e:
    tokenizer_lib.tokenizer_dir_from_bpe(pipeline_config.BPE, work)
  message = str(e.value)
  assert message.startswith("[Errno 28] No space left on device: ")
  assert str(work / "tokenizer") in message and "\n" not in message
  assert os.listdir(work / "tokenizer") == []
