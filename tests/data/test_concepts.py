"""Tests of jax_dissect.data.concepts: reading concept set files."""

import logging
import os

import pytest

from configs import shared_data
from jax_dissect.data import concepts

SHARED_CONCEPTS = shared_data.path("concepts")


def _write(tmp_path, data: bytes, name="concepts.txt"):
  path = tmp_path / name
  path.write_bytes(data)
  return path


def test_blank_lines_whitespace_and_duplicates(tmp_path):
  path = _write(tmp_path, b"dog\n\n  cat \n\t\ndog\nbird\ncat\nDog\n")
  cs = concepts.read_concepts(path)
  assert cs.concepts == ("dog", "cat", "bird", "Dog")
  assert (cs.num_lines, cs.num_blank, cs.num_duplicates) == (8, 2, 2)
  assert cs.num_dropped == 4
  assert len(cs) == 4
  assert cs.source == os.fspath(path)


def test_crlf_cr_and_bom(tmp_path):
  path = _write(tmp_path, "\ufeffdog\r\ncat\r\n\r\nbird\rfish".encode("utf-8"))
  cs = concepts.read_concepts(path)
  assert cs.concepts == ("dog", "cat", "bird", "fish")
  assert cs.num_blank == 1


def test_bom_line_is_a_duplicate_of_plain_line(tmp_path):
  path = _write(tmp_path, "\ufeffdog\ndog\n".encode("utf-8"))
  cs = concepts.read_concepts(path)
  assert cs.concepts == ("dog",)
  assert cs.num_duplicates == 1


def test_unicode_concepts_kept(tmp_path):
  path = _write(tmp_path, "café\nnaïve\n日本\n".encode("utf-8"))
  assert concepts.read_concepts(path).concepts == ("café", "naïve", "日本")


def test_non_utf8_names_file_line_and_offset(tmp_path):
  path = _write(tmp_path, b"dog\ncat\ncaf\xe9\n")
  with pytest.raises(concepts.ConceptFileError) as e:
    concepts.read_concepts(path)
  msg = str(e.value)
  assert os.fspath(path) in msg
  assert "line 3" in msg and "offset 11" in msg and "UTF-8" in msg


@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", "\ufeff".encode()])
def test_empty_set_is_an_error(tmp_path, data):
  path = _write(tmp_path, data)
  with pytest.raises(concepts.ConceptFileError, match="empty"):
    concepts.read_concepts(path)


def test_missing_file_names_path(tmp_path):
  path = tmp_path / "nope.txt"
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    concepts.read_concepts(path)
  with pytest.raises(FileNotFoundError, match="directory"):
    concepts.read_concepts(tmp_path)


def test_template_off_by_default_and_applied(tmp_path):
  path = _write(tmp_path, b"dog\ncat\n")
  assert concepts.read_concepts(path).texts() == ["dog", "cat"]
  cs = concepts.read_concepts(path, template="a photo of {}")
  assert cs.concepts == ("dog", "cat")
  assert cs.texts() == ["a photo of dog", "a photo of cat"]
  assert concepts.apply_template(["a {x}"], "{} here") == ["a {x} here"]


@pytest.mark.parametrize("template", ["a photo", "{} and {}", "{0}", 3])
def test_bad_template(template):
  with pytest.raises(ValueError, match="template"):
    concepts.parse_concepts("dog", template=template)


def test_logs_counts(tmp_path, caplog):
  path = _write(tmp_path, b"a\n\na\nb\n")
  with caplog.at_level(logging.INFO):
    concepts.read_concepts(path)
  assert "2 concepts kept of 4 lines (1 blank, 1 duplicate dropped)" in (
      caplog.text)


def test_shared_imagenet_labels():
  cs = concepts.read_concepts(
      os.path.join(SHARED_CONCEPTS, "imagenet_labels.txt"))
  assert (len(cs), cs.num_lines, cs.num_dropped) == (1000, 1000, 0)
