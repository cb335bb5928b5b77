"""CLIP's tokenizer built offline from OpenAI's BPE merges file.

Hugging Face's CLIP tokenizer files derive from OpenAI's
bpe_simple_vocab_16e6.txt.gz; `build_clip_tokenizer` writes them (no
download), and `tokenizer_dir_from_bpe` builds one once per work directory,
safely under concurrent processes.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
from typing import TYPE_CHECKING

from absl import logging

from jax_dissect.runtime import hub
from jax_dissect.store import files

if TYPE_CHECKING:
  import transformers

NUM_MERGES = 49152 - 256 - 2
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
  """Maps each byte 0..255 to a printable unicode symbol (GPT-2/CLIP BPE).

  Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves;
  the other 68 bytes map to chr(256 + n) in byte order. The dict is ordered
  printable bytes first, which is the order of CLIP's vocabulary.
  """
  printable = (list(range(ord("!"), ord("~") + 1)) +
               list(range(ord("¡"), ord("¬") + 1)) +
               list(range(ord("®"), ord("ÿ") + 1)))
  mapping = {b: chr(b) for b in printable}
  extra = 0
  for b in range(256):
    if b not in mapping:
      mapping[b] = chr(256 + extra)
      extra += 1
  return mapping


def build_clip_tokenizer(bpe_gz_path: str | os.PathLike,
                         out_dir: str | os.PathLike,
                         max_length: int = 77
                         ) -> transformers.CLIPTokenizerFast:
  """Builds CLIP's tokenizer from OpenAI's bpe_simple_vocab_16e6.txt.gz.

  Writes vocab.json and merges.txt (the files Hugging Face's CLIP tokenizers
  are made of) and the saved CLIPTokenizerFast to `out_dir`; no download.
  Merges are lines 1..48894 of the file (line 0 is a header); the vocabulary
  is the 256 byte symbols, the same with "</w>", the merged pairs, then
  <|startoftext|> (49406) and <|endoftext|> (49407): 49408 entries.

  Args:
    bpe_gz_path: path of the gzipped merges file.
    out_dir: directory to write (created if missing).
    max_length: the tokenizer's model_max_length (CLIP's context is 77).

  Returns:
    The tokenizer, also loadable later with
    CLIPTokenizerFast.from_pretrained(out_dir).
  """
  bpe_gz_path, out_dir = os.fspath(bpe_gz_path), os.fspath(out_dir)
  if not os.path.isfile(bpe_gz_path):
    raise FileNotFoundError(f"BPE merges file {bpe_gz_path!r} does not exist")
  try:
    with gzip.open(bpe_gz_path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")
  except (OSError, EOFError, UnicodeDecodeError) as e:
    # gzip names neither the file nor what was expected.
    what = ("is not gzip-compressed" if isinstance(e, gzip.BadGzipFile)
            else "is not gzipped UTF-8 text" if isinstance(
                e, UnicodeDecodeError) else f"cannot be read ({e})")
    raise ValueError(
        f"clip_tokenizer {bpe_gz_path!r} {what}; give OpenAI's "
        "bpe_simple_vocab_16e6.txt.gz or a saved tokenizer directory"
    ) from None
  merges = lines[1:NUM_MERGES + 1]
  if len(merges) != NUM_MERGES or any(len(m.split(" ")) != 2 for m in merges):
    raise ValueError(
        f"{bpe_gz_path!r} is not CLIP's BPE merges file: expected "
        f"{NUM_MERGES} merge lines of two symbols after the header, got "
        f"{len(merges)} lines")
  symbols = list(bytes_to_unicode().values())
  tokens = symbols + [s + "</w>" for s in symbols]
  tokens += ["".join(m.split(" ")) for m in merges]
  tokens += [START_TOKEN, END_TOKEN]
  vocab = {t: i for i, t in enumerate(tokens)}
  if len(vocab) != len(tokens):
    raise ValueError(f"{bpe_gz_path!r} yields duplicate vocabulary entries")
  os.makedirs(out_dir, exist_ok=True)
  vocab_file = os.path.join(out_dir, "vocab.json")
  merges_file = os.path.join(out_dir, "merges.txt")
  with open(vocab_file, "w", encoding="utf-8") as f:
    json.dump(vocab, f, ensure_ascii=False)
  with open(merges_file, "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
  tokenizer = hub.transformers_lib().CLIPTokenizerFast(
      vocab_file=vocab_file, merges_file=merges_file,
      model_max_length=max_length)
  try:
    tokenizer.save_pretrained(out_dir)
  except OSError:
    raise
  except Exception as e:  # tokenizers' Rust errors: a plain Exception.
    raise _os_error(e, out_dir) from None
  logging.info("built CLIP tokenizer (%d tokens) in %s", len(tokenizer),
               out_dir)
  return tokenizer


def _os_error(e: Exception, path: str) -> OSError:
  """An error of the tokenizers library ("No space left on device (os
  error 28)") as an OSError naming `path`."""
  text = " ".join(str(e).split())
  found = re.search(r"\(os error (\d+)\)", text)
  if found:
    code = int(found.group(1))
    return OSError(code, os.strerror(code), path)
  return OSError(errno.EIO, f"cannot save the tokenizer: {text[:150]}", path)


def tokenizer_dir_from_bpe(bpe_gz_path: str | os.PathLike,
                           work_dir: str | os.PathLike) -> str:
  """A saved CLIP tokenizer directory built from a BPE file, made once.

  The tokenizer is built into a fresh temporary directory under
  `work_dir/tokenizer/` and renamed into place, so concurrent processes
  never see (or leave) a half-written tokenizer; the first to finish wins
  and the others reuse its directory.

  Returns:
    `work_dir/tokenizer/<digest of the BPE file's path and size>`.
  """
  bpe = os.path.abspath(os.fspath(bpe_gz_path))
  if not os.path.isfile(bpe):
    raise FileNotFoundError(f"BPE merges file {bpe!r} does not exist")
  digest = hashlib.sha256(
      f"{bpe}:{os.path.getsize(bpe)}".encode()).hexdigest()[:16]
  parent = os.path.join(os.fspath(work_dir), "tokenizer")
  out = os.path.join(parent, digest)
  if os.path.exists(os.path.join(out, "tokenizer.json")):
    return out
  # A fresh, locked temporary renamed as a whole (another process finishing
  # first wins); it gets the umask's permissions, not mkdtemp's 0700.
  with files.atomic_dir(out) as tmp:
    build_clip_tokenizer(bpe, tmp)
  return out
