"""Concept sets: one concept per line of a UTF-8 text file.

Reading a concept set strips whitespace from every line, drops blank lines
and exact duplicates (the first occurrence is kept) and keeps the order of
the file, as CLIP-Dissect does. An optional prompt template such as
"a photo of {}" turns each concept into the text given to CLIP; the paper
uses none, so there is none by default.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from absl import logging

PLACEHOLDER = "{}"


class ConceptFileError(ValueError):
  """A concept file cannot be decoded or holds no concept."""


@dataclasses.dataclass(frozen=True)
class ConceptSet:
  """The concepts of one file, in file order, and what was dropped.

  Attributes:
    concepts: the M distinct, stripped, non-blank concepts in file order.
    source: the file path (or a description of where the text came from).
    num_lines: lines in the source, blank ones included.
    num_blank: lines that were empty or whitespace only.
    num_duplicates: lines equal (after stripping) to an earlier concept.
    template: prompt template applied by `texts()`, or None.
  """
  concepts: tuple[str, ...]
  source: str
  num_lines: int
  num_blank: int
  num_duplicates: int
  template: str | None = None

  def __len__(self) -> int:
    return len(self.concepts)

  @property
  def num_dropped(self) -> int:
    """Lines not kept as concepts (blank lines plus duplicates)."""
    return self.num_blank + self.num_duplicates

  def texts(self) -> list[str]:
    """The M texts to embed with CLIP: concepts with the template applied."""
    return apply_template(self.concepts, self.template)


def check_template(template: str | None) -> None:
  """Raises ValueError unless `template` is None or holds exactly one "{}"."""
  if template is None:
    return
  if not isinstance(template, str) or template.count(PLACEHOLDER) != 1:
    raise ValueError(
        f"prompt template {template!r} must be a string with exactly one "
        f"{PLACEHOLDER!r} where the concept goes, e.g. 'a photo of {{}}'; or "
        "None for no template")


def apply_template(concepts: Sequence[str], template: str | None) -> list[str]:
  """Returns [template with "{}" replaced by c for c in concepts].

  Args:
    concepts: M concept strings.
    template: a string with exactly one "{}", or None (concepts unchanged).
  """
  check_template(template)
  if template is None:
    return list(concepts)
  return [template.replace(PLACEHOLDER, c) for c in concepts]


def parse_concepts(text: str, source: str = "<string>",
                   template: str | None = None) -> ConceptSet:
  """Builds a ConceptSet from the decoded text of a concept file.

  Lines end with LF, CRLF or CR; a leading byte order mark is ignored.

  Args:
    text: the whole file as a string.
    source: where the text came from, for messages.
    template: optional prompt template, see `apply_template`.

  Returns:
    The ConceptSet.

  Raises:
    ConceptFileError: if no concept is left after dropping blank lines.
    ValueError: for a bad template.
  """
  check_template(template)
  if text.startswith("\ufeff"):
    text = text[1:]
  lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
  if lines and lines[-1] == "":  # The final newline does not open a line.
    lines.pop()
  concepts, seen, num_blank, num_duplicates = [], set(), 0, 0
  for line in lines:
    concept = line.strip()
    if not concept:
      num_blank += 1
    elif concept in seen:
      num_duplicates += 1
    else:
      seen.add(concept)
      concepts.append(concept)
  if not concepts:
    raise ConceptFileError(
        f"concept set {source} is empty: {len(lines)} lines, none with a "
        "concept (at least 1 is needed)")
  result = ConceptSet(tuple(concepts), source, len(lines), num_blank,
                      num_duplicates, template)
  logging.info(
      "concept set %s: %d concepts kept of %d lines (%d blank, %d duplicate "
      "dropped)%s", source, len(concepts), len(lines), num_blank,
      num_duplicates, f"; template {template!r}" if template else "")
  return result


def read_concepts(path: str | os.PathLike,
                  template: str | None = None) -> ConceptSet:
  """Reads a concept set file (UTF-8, one concept per line).

  Args:
    path: the file.
    template: optional prompt template with one "{}", e.g. "a photo of {}";
      None (the default, as in the paper) embeds concepts as written.

  Returns:
    The ConceptSet (see `parse_concepts` for what is dropped).

  Raises:
    FileNotFoundError: if there is no file at `path`.
    ConceptFileError: for bytes that are not UTF-8 (naming the line and byte
      offset) or a file with no concept.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "does not exist"
    raise FileNotFoundError(f"concept file {path!r} {what}")
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise ConceptFileError(
        f"concept file {path!r} is not valid UTF-8: byte "
        f"{data[e.start:e.start + 1]!r} at offset {e.start} (line {line}) "
        f"{e.reason}; re-save the file as UTF-8") from e
  return parse_concepts(text, source=path, template=template)
