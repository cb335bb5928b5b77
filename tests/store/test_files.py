"""Atomic writes: all or nothing, the umask's permissions, CSV/JSON text."""

import json
import os

import numpy as np
import pytest

from jax_dissect.store import files


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  path = str(tmp_path / "a.npy")
  with pytest.raises(RuntimeError):
    with files.atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        f.write(b"partial")
      raise RuntimeError("crash")
  assert os.listdir(tmp_path) == []
  files.write_text(path, "old")
  with pytest.raises(RuntimeError):
    with files.atomic_path(path) as tmp:
      with open(tmp, "w") as f:
        f.write("new, half written")
      raise RuntimeError("crash")
  assert open(path).read() == "old" and os.listdir(tmp_path) == ["a.npy"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664),
                                        (0o077, 0o600)])
def test_files_get_the_umask_permissions(tmp_path, umask, mode):
  old = os.umask(umask)
  try:
    for write in (lambda p: files.write_text(p, "x"),
                  lambda p: files.save_npy(p, np.zeros(3)),
                  lambda p: files.write_json(p, {"a": 1})):
      path = str(tmp_path / f"f{umask}")
      write(path)
      assert os.stat(path).st_mode & 0o777 == mode
  finally:
    os.umask(old)


def test_csv_and_json_text(tmp_path):
  rows = [{"a": 1, "b": 0.5}, {"a": np.int64(2), "c": None, "b": [1, 2]}]
  text = files.csv_text(rows)
  assert text.splitlines() == ["a,b,c", "1,0.5,", "2,\"[1, 2]\","]
  path = files.write_json(tmp_path / "x.json", {"v": np.float32(0.5)})
  assert json.load(open(path)) == {"v": 0.5}


def _modes(root):
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, root)] = os.stat(path).st_mode & 0o777
  return out


def test_cache_files_and_tokenizer_get_the_umask_permissions(tmp_path):
  """Everything a run puts in its cache (arrays, records, JSON entries,
  shards, locks and the tokenizer built from the BPE file) can be read by
  the group: 0644 files and 0755 directories under umask 0022."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from jax_dissect import clip  # pylint: disable=g-import-not-at-top
  from jax_dissect.store import cache as cache_lib  # pylint: disable=g-import-not-at-top
  old = os.umask(0o022)
  try:
    c = cache_lib.ArrayCache(str(tmp_path / "cache"))
    c.save(c.key("a", n=1), np.zeros((3, 2)), {"what": "test"})
    c.save_json(c.key("labels", n=1), {"x": 1})
    w = c.sharded_writer(c.key("acts", n=1), 4, 2)
    w.save(0, np.zeros((2, 2)))
    clip.tokenizer_dir_from_bpe(common.CLIP_BPE, str(tmp_path / "cache"))
  finally:
    os.umask(old)
  modes = _modes(tmp_path / "cache")
  assert any(p.startswith("tokenizer") for p in modes)
  wrong = {p: oct(m) for p, m in modes.items()
           if m != (0o755 if os.path.isdir(tmp_path / "cache" / p)
                    else 0o644)}
  assert not wrong, wrong


def test_atomic_dir_first_writer_wins(tmp_path):
  target = tmp_path / "out"
  with files.atomic_dir(target) as tmp:
    open(os.path.join(tmp, "a"), "w").write("first")
    with files.atomic_dir(target) as tmp2:  # Another writer, finishing first.
      open(os.path.join(tmp2, "a"), "w").write("second")
  assert open(target / "a").read() == "second"
  assert os.listdir(tmp_path) == ["out"]
  with pytest.raises(RuntimeError):
    with files.atomic_dir(tmp_path / "other"):
      raise RuntimeError("crash")
  assert os.listdir(tmp_path) == ["out"]


def test_remove_orphans_keeps_live_writers(tmp_path):
  with files.atomic_path(tmp_path / "x.txt") as tmp:
    os.utime(tmp, (1, 1))
    assert files.remove_orphans(tmp_path, min_age_s=0) == []  # Locked.
    open(tmp, "w").write("x")
  dead = tmp_path / ".tmp-dead"
  dead.write_text("partial")
  assert files.remove_orphans(tmp_path, min_age_s=60) == []  # Too recent.
  assert files.remove_orphans(tmp_path, min_age_s=0) == [str(dead)]
  assert sorted(os.listdir(tmp_path)) == ["x.txt"]


def test_check_writable_dir(tmp_path):
  (tmp_path / "f").write_text("x")
  assert files.check_writable_dir(tmp_path / "new" / "deeper", "out") == str(
      tmp_path / "new" / "deeper")
  assert not os.path.exists(tmp_path / "new")  # Nothing is created.
  with pytest.raises(ValueError, match=r"^out='.*/f' is a file"):
    files.check_writable_dir(tmp_path / "f", "out")
  with pytest.raises(ValueError, match=r"cannot be created: '.*/f' is a file"):
    files.check_writable_dir(tmp_path / "f" / "sub", "out")
  if os.path.isdir("/sys"):  # Not writable, even by root.
    with pytest.raises(ValueError, match=r"cannot be created in '/sys'"):
      files.check_writable_dir("/sys/x", "out")
  if os.geteuid() != 0:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(ValueError, match="is not writable"):
      files.check_writable_dir(ro, "out")
