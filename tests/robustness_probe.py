"""Probe of bad inputs and faults through the command line (issue 25).

Runs the scripts of a checkout (any version: point --repo at it) on bad
options and files, and on faults (damaged caches, partial results, a full
disk, symlink loops), and sorts each outcome:

  bad inputs:  one-line  (exit 1, one `error:` line <= 300 chars that says
                          what the case needs it to say)
               unclear   (exit 1, but a longer line, or it names the wrong
                          thing, or comes only after the work)
               traceback (a Python traceback, or another exit status)
               accepted  (exit 0: nonsense accepted)
  faults:      survived  (identical results to a clean run, or the one-line
                          refusal the fault calls for)
               other     (different results, an error it should not give,
                          a refusal that is not one line)
               accepted  (exit 0 where it must refuse, or code from a run
                          folder was run)
               traceback

  python tests/robustness_probe.py --repo=. --work=/tmp/probe
  python tests/robustness_probe.py --repo=/path/to/main --work=/tmp/probe-main

Not a test (pytest does not collect it): it runs ~90 processes, about
10 minutes on 2 cores. The full-disk faults need root (they mount a small
tmpfs) and are skipped otherwise.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable

import numpy as np

_SHARED = os.environ.get("JAX_DISSECT_SHARED_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
    "shared", "data")
_CONCEPTS = ("dog cat car tree water sky house person boat grass road bird "
             "red blue green wood metal glass").split()
_PLANTED = """
import os
open(os.environ["PROBE_MARKER"], "w").write("imported")
def make():
  raise RuntimeError("called")
"""


@dataclasses.dataclass
class Outcome:
  name: str
  kind: str  # "input" or "fault"
  verdict: str
  detail: str


class Probe:
  """The scripts of one checkout, and a work directory of inputs."""

  def __init__(self, repo: str, work: str):
    self.repo = os.path.abspath(repo)
    self.work = os.path.abspath(work)
    self.outcomes: list[Outcome] = []
    self.env = dict(os.environ, PYTHONPATH=self.repo, JAX_PLATFORMS="cpu",
                    PYTHONUNBUFFERED="1", PROBE_MARKER=self.path("marker"))
    self.env.pop("XLA_FLAGS", None)
    self.env["JAX_DISSECT_SHARED_DATA"] = os.path.abspath(_SHARED)

  def path(self, *parts: str) -> str:
    return os.path.join(self.work, *parts)

  # -- running ---------------------------------------------------------------

  def script(self, name: str, *flags: str, timeout: int = 600
             ) -> tuple[int, str, float]:
    """(exit status, stderr, seconds) of scripts/<name> with `flags`."""
    t0 = time.time()
    try:
      proc = subprocess.run(
          [sys.executable, os.path.join(self.repo, "scripts", name), *flags],
          cwd=self.repo, env=self.env, capture_output=True, text=True,
          timeout=timeout, check=False)
      return proc.returncode, proc.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
      err = e.stderr.decode() if isinstance(e.stderr, bytes) else (
          e.stderr or "")
      return -9, err + "\n<timeout>", time.time() - t0

  def describe(self, result: str, cache: str, *flags: str, probe=None,
               concepts=None, timeout: int = 600):
    return self.script(
        "describe_neurons.py",
        f"--config={self.repo}/configs/resnet18_cifar100.py:smoke",
        f"--d_probe=folder:{probe or self.path('probe')}",
        f"--concept_set={concepts or self.path('concepts.txt')}",
        f"--result_dir={result}", f"--activation_dir={cache}",
        "--target_layers=layer2,layer3,layer4", "--batch_size=8",
        *flags, timeout=timeout)

  # -- inputs ----------------------------------------------------------------

  def setup(self) -> None:
    if os.path.exists(self.work):
      shutil.rmtree(self.work)
    os.makedirs(self.path("probe"))
    photos = sorted(os.listdir(os.path.join(_SHARED, "imagenet_sample")))
    for name in photos[:16]:
      shutil.copy(os.path.join(_SHARED, "imagenet_sample", name),
                  self.path("probe", name))
    with open(self.path("concepts.txt"), "w") as f:
      f.write("\n".join(_CONCEPTS) + "\n")
    n, m = 16, len(_CONCEPTS)
    np.save(self.path("p_zeros.npy"), np.zeros((n, m), np.float32))
    p = np.random.default_rng(0).random((n, m)).astype(np.float32)
    p[3, 2] = np.nan
    np.save(self.path("p_nan.npy"), p)
    with open(self.path("not_gzip.txt"), "w") as f:
      f.write("#version: 0.2\nh e\n")
    with open(self.path("binary.bin"), "wb") as f:
      f.write(bytes(range(256)) * 8)
    with open(self.path("empty.txt"), "w") as f:
      f.write("\n\n")
    with open(self.path("a_file"), "w") as f:
      f.write("a file")
    with open(self.path("bad_config.py"), "w") as f:
      f.write("def get_config(:\n")
    # A folder with a looped file symlink, and one with a folder loop.
    shutil.copytree(self.path("probe"), self.path("probe_loop"))
    os.symlink("zz_loop.jpg", self.path("probe_loop", "zz_loop.jpg"))
    shutil.copytree(self.path("probe"), self.path("probe_dirloop"))
    os.symlink(self.path("probe_dirloop"), self.path("probe_dirloop", "sub"))
    # A synthetic run for the analyses (the checkout's own test helper).
    sys.path.insert(0, self.repo)
    from tests.helpers import synthetic_run as synth  # pylint: disable=g-import-not-at-top
    world = synth.make_world(n_per_class=5)
    self.synth = synth.write_results(self.path("synth"), world)
    synth.write_images(self.path("synth_images"), world)
    os.makedirs(self.path("mod"))
    with open(self.path("mod", "probe_planted_mod.py"), "w") as f:
      f.write(_PLANTED)
    sys.path.remove(self.repo)

  # -- recording -------------------------------------------------------------

  def bad_input(self, name: str, result: tuple[int, str, float],
                must: Callable[[str, float], bool] = lambda line, s: True
                ) -> None:
    rc, err, seconds = result
    lines = [l for l in err.strip().splitlines() if l.strip()]
    last = lines[-1] if lines else ""
    if rc == 0:
      verdict = "accepted"
    elif "Traceback" in err or rc not in (1, 2):  # describe: 2 (its way).
      verdict = "traceback"
    elif (last.startswith("error: ") and len(last) - 7 <= 300
          and must(last, seconds)):
      verdict = "one-line"
    else:
      verdict = "unclear"
    self.outcomes.append(Outcome(name, "input", verdict,
                                 f"rc={rc} {seconds:.0f}s {last[:160]}"))

  def fault(self, name: str, verdict: str, detail: str) -> None:
    self.outcomes.append(Outcome(name, "fault", verdict, detail))

  def refusal(self, name: str, result, needs: str) -> None:
    """A fault whose right outcome is a one-line refusal naming `needs`."""
    rc, err, _ = result
    last = err.strip().splitlines()[-1] if err.strip() else ""
    if rc == 0:
      self.fault(name, "accepted", "exit 0")
    elif "Traceback" in err or rc not in (1, 2):
      self.fault(name, "traceback", last[:160])
    elif last.startswith("error:") and needs in last and len(last) <= 307:
      self.fault(name, "survived", last[:160])
    else:
      self.fault(name, "other", last[:160])

  def same(self, name: str, result, run_dir: str, reference: str) -> None:
    """A fault whose right outcome is the reference run's results."""
    rc, err, _ = result
    last = err.strip().splitlines()[-1] if err.strip() else ""
    if rc != 0:
      self.fault(name, "traceback" if "Traceback" in err else "other",
                 f"rc={rc} {last[:160]}")
      return
    got = _neurons(run_dir)
    want = _neurons(reference)
    if got == want:
      self.fault(name, "survived", "identical results")
    else:
      diff = sum(a != b for a, b in zip(got, want))
      self.fault(name, "other", f"{diff} of {len(want)} neurons differ")


def _neurons(run_dir: str) -> list[str]:
  with open(os.path.join(run_dir, "neurons.jsonl")) as f:
    return [line.strip() for line in f if line.strip()]


def _entries(cache: str, kind: str) -> list[str]:
  folder = os.path.join(cache, kind)
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if n.endswith(".npy"))


def _layer_entry(cache: str, layer: str) -> str:
  for path in _entries(cache, "activations"):
    try:
      with open(os.path.splitext(path)[0] + ".json") as f:
        if json.load(f).get("layer") == layer:
          return path
    except OSError:
      continue
  raise FileNotFoundError(f"no activations entry of {layer} in {cache}")


def _flip(path: str) -> None:
  st = os.stat(path)
  with open(path, "r+b") as f:
    f.seek(-16, os.SEEK_END)
    data = f.read(8)
    f.seek(-16, os.SEEK_END)
    f.write(bytes(b ^ 0xFF for b in data))
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _edit_json(path: str, change: Callable[[dict], None]) -> None:
  """Edits a run file by hand (and drops the run's manifest if any)."""
  with open(path) as f:
    value = json.load(f)
  change(value)
  with open(path, "w") as f:
    json.dump(value, f)
  manifest = os.path.join(os.path.dirname(path), "manifest.json")
  if os.path.exists(manifest):
    os.remove(manifest)


def _copy_cache_run(probe: Probe, name: str) -> tuple[str, str]:
  """A fresh copy of the reference run and its cache."""
  run, cache = probe.path(f"{name}_run"), probe.path(f"{name}_cache")
  shutil.copytree(probe.path("ref_cache"), cache, symlinks=True)
  return run, cache


# ----------------------------------------------------------------------------


def bad_inputs(p: Probe) -> None:
  res, cache = p.path("bad_res"), p.path("bad_cache")
  d = lambda *flags, **kw: p.describe(res, cache, *flags, **kw)
  cases = [
      ("a=nan", d("--config.similarity_kwargs.a=nan"),
       lambda l, s: "similarity_kwargs.a" in l),
      ("a=inf", d("--config.similarity_kwargs.a=inf"),
       lambda l, s: "similarity_kwargs.a" in l),
      ("lam=-inf", d("--config.similarity_kwargs.lam=-inf"),
       lambda l, s: "lam" in l),
      ("p_start=nan", d("--config.similarity_kwargs.p_start=nan"),
       lambda l, s: "p_start" in l),
      ("top_k=-1", d("--config.similarity_kwargs.top_k=-1"),
       lambda l, s: "top_k" in l and "1000000000" not in l),
      ("top_k=2.5", d("--config.similarity_kwargs.top_k=2.5"),
       lambda l, s: "top_k" in l),
      ("P all zeros", d(f"--config.concept_activations={p.path('p_zeros.npy')}"),
       lambda l, s: "p_zeros.npy" in l),
      ("P with NaN", d(f"--config.concept_activations={p.path('p_nan.npy')}"),
       lambda l, s: "p_nan.npy" in l),
      ("P a text file", d("--config.concept_activations="
                          f"{p.path('concepts.txt')}"),
       lambda l, s: "concepts.txt" in l),
      ("clip_tokenizer not gzip",
       d(f"--config.clip_tokenizer={p.path('not_gzip.txt')}"),
       lambda l, s: "clip_tokenizer" in l and "not_gzip.txt" in l),
      ("clip_tokenizer missing",
       d(f"--config.clip_tokenizer={p.path('nope.gz')}"),
       lambda l, s: "nope.gz" in l),
      ("unknown TFDS name", d("--d_probe=tfds:no_such_dataset_xyz:test"),
       lambda l, s: "no_such_dataset_xyz" in l),
      ("probe folder missing", d(f"--d_probe=folder:{p.path('nope')}"),
       lambda l, s: "nope" in l),
      ("second --config fails",
       p.script("describe_neurons.py",
                f"--config={p.repo}/configs/resnet18_cifar100.py:smoke",
                f"--config={p.path('bad_config.py')}",
                f"--result_dir={res}", f"--activation_dir={cache}"),
       lambda l, s: "bad_config.py" in l),
      ("--config missing", p.script("describe_neurons.py",
                                    f"--config={p.path('nope.py')}"),
       lambda l, s: "nope.py" in l),
      ("result_dir inside cache", d(f"--result_dir={cache}/results"),
       lambda l, s: "result_dir" in l),
      ("activation_dir a file", d(f"--activation_dir={p.path('a_file')}"),
       lambda l, s: "activation_dir" in l),
      ("result_dir unwritable", d("--result_dir=/proc/jax_dissect_res"),
       lambda l, s: "result_dir" in l),
      ("unknown layer", d("--target_layers=layer9"),
       lambda l, s: "layer9" in l),
      ("batch_size=0", d("--batch_size=0"), lambda l, s: "batch_size" in l),
      ("unknown similarity_fn", d("--similarity_fn=nope"),
       lambda l, s: "similarity_fn" in l),
      ("p_dtype=int8", d("--config.p_dtype=int8"),
       lambda l, s: "p_dtype" in l),
      ("pool_mode=median", d("--pool_mode=median"),
       lambda l, s: "median" in l),
      ("max_images=-1", d("--config.max_images=-1"),
       lambda l, s: "max_images" in l),
      ("shard_images=0", d("--config.shard_images=0"),
       lambda l, s: "shard_images" in l),
      ("prompt_template without {}", d("--config.prompt_template=photo"),
       lambda l, s: "prompt_template" in l),
      ("empty concept set", d(f"--concept_set={p.path('empty.txt')}"),
       lambda l, s: "empty.txt" in l),
      ("binary concept set", d(f"--concept_set={p.path('binary.bin')}"),
       lambda l, s: "binary.bin" in l),
      ("missing concept set", d(f"--concept_set={p.path('nope.txt')}"),
       lambda l, s: "nope.txt" in l),
      ("unknown target_model", d("--target_model=nosuchnet"),
       lambda l, s: "nosuchnet" in l),
      ("target_model=os:getcwd", d("--target_model=os:getcwd"),
       lambda l, s: "os:getcwd" in l),
      ("devices=99", d("--config.devices=99"), lambda l, s: "devices" in l),
      ("unknown option", d("--config.xyz=1"), lambda l, s: "xyz" in l),
  ]
  for name, result, must in cases:
    p.bad_input(f"describe {name}", result, must)

  s = p.synth
  a = lambda script, *flags: p.script(script, f"--results_dir={s}", *flags)
  stamp = p.path("a_file")
  cases = [
      ("stability layer9", a("stability.py", "--layers=layer9"),
       lambda l, t: "layer9" in l),
      ("stability num_resamples=0", a("stability.py", "--num_resamples=0"),
       lambda l, t: "num_resamples" in l),
      ("stability confidence=2", a("stability.py", "--confidence=2"),
       lambda l, t: "confidence" in l),
      ("stability out_dir unwritable",
       a("stability.py", "--num_resamples=100000",
         f"--out_dir={stamp}/analysis"),
       lambda l, t: "out_dir" in l and t < 60),
      ("compositional text_embed_fn=os:getcwd",
       a("compositional.py", "--layer=layer4", "--units=0",
         "--num_singles=4", "--text_embed_fn=os:getcwd"),
       lambda l, t: "text_embed_fn" in l),
      ("compositional text_embed_fn missing module",
       a("compositional.py", "--layer=layer4", "--units=0",
         "--num_singles=4", "--text_embed_fn=nosuchmod_xyz:f"),
       lambda l, t: "nosuchmod" in l),
      ("profile binary category_table",
       a("profile_layers.py", "--categorizer=table",
         f"--category_table={p.path('binary.bin')}"),
       lambda l, t: "binary.bin" in l),
      ("profile missing category_table",
       a("profile_layers.py", "--categorizer=table",
         f"--category_table={p.path('nope.tsv')}"),
       lambda l, t: "nope.tsv" in l),
      ("profile tau=nan", a("profile_layers.py", "--tau=nan"),
       lambda l, t: "tau" in l),
      ("evaluate missing class_names",
       a("evaluate.py", "--layer=fc", f"--class_names={p.path('nope')}"),
       lambda l, t: "nope" in l),
      ("weights without layers", a("weight_analysis.py"),
       lambda l, t: "layer_in" in l),
      ("report to a directory",
       a("make_report.py", f"--out={p.work}", "--num_thumbs=0"),
       lambda l, t: "out" in l),
  ]
  for name, result, must in cases:
    p.bad_input(name, result, must)
  p.bad_input("stability results_dir missing",
              p.script("stability.py", f"--results_dir={p.path('nope')}"),
              lambda l, t: "nope" in l)
  p.bad_input("stability results_dir a file",
              p.script("stability.py", f"--results_dir={p.path('a_file')}"),
              lambda l, t: "a_file" in l)

  # Run folders that point elsewhere (hand edits).
  for name, change, needs in (
      ("arrays.json: fc -> layer4's array",
       lambda v: v["activations"].update(fc=v["activations"]["layer4"]),
       "fc"),
      ("arrays.json: P outside the cache",
       lambda v: v.update(concept_activations=p.path("p_zeros.npy")),
       "concept_activations"),
  ):
    copy = p.path(f"edited_{len(p.outcomes)}")
    shutil.copytree(s, copy)
    _edit_json(os.path.join(copy, "arrays.json"), change)
    rc, err, sec = p.script("stability.py", f"--results_dir={copy}",
                            "--num_resamples=2")
    p.bad_input(name, (rc, err, sec), lambda l, t, n=needs: n in l)


def faults(p: Probe) -> None:
  # The reference: a clean run.
  ref, ref_cache = p.path("ref_run"), p.path("ref_cache")
  rc, err, seconds = p.describe(ref, ref_cache)
  if rc != 0:
    raise SystemExit(f"the reference run failed: {err[-2000:]}")
  print(f"reference run: {seconds:.0f} s", flush=True)

  # Cache faults: damage, then run again; the results must be the same.
  def cache_fault(name, damage):
    run, cache = _copy_cache_run(p, name.replace(" ", "_"))
    damage(cache)
    p.same(f"cache: {name}", p.describe(run, cache), run, ref)

  cache_fault("flipped layer3 entry",
              lambda c: _flip(_layer_entry(c, "layer3")))

  def no_record_flipped(c):
    entry = _layer_entry(c, "layer3")
    os.remove(os.path.splitext(entry)[0] + ".check.json")
    _flip(entry)
  cache_fault("layer3 record deleted, bytes flipped", no_record_flipped)
  cache_fault("layer3 record deleted", lambda c: os.remove(
      os.path.splitext(_layer_entry(c, "layer3"))[0] + ".check.json"))

  def truncated(c):
    with open(_layer_entry(c, "layer3"), "r+b") as f:
      f.truncate(os.path.getsize(f.name) - 64)
  cache_fault("truncated layer3 entry (recomputed alone)", truncated)

  def directory(c):
    entry = _layer_entry(c, "layer2")
    os.remove(entry)
    os.makedirs(os.path.join(entry, "sub"))
  cache_fault("layer2 entry replaced by a directory", directory)

  def json_directory(c):
    folder = os.path.join(c, "labels")
    entry = sorted(n for n in os.listdir(folder)
                   if n.endswith(".entry.json"))[0]
    os.remove(os.path.join(folder, entry))
    os.makedirs(os.path.join(folder, entry, "sub"))
  cache_fault("labels entry replaced by a directory", json_directory)
  cache_fault("P flipped", lambda c: _flip(
      _entries(c, "concept_activations")[0]))

  # Probe folders with loops: the same labels as the folder without.
  for name, folder in (("looped file symlink", "probe_loop"),
                       ("folder symlink loop", "probe_dirloop")):
    run = p.path(f"{folder}_run")
    p.same(f"probe folder: {name}",
           p.describe(run, p.path(f"{folder}_cache"),
                      probe=p.path(folder)), run, ref)

  # Partial and mixed results folders: readers must refuse them.
  other = p.path("other_run")
  rc, err, _ = p.describe(other, p.path("other_cache"),
                          "--config.similarity_kwargs.top_k=3")
  if rc != 0:
    raise SystemExit(f"the second run failed: {err[-2000:]}")
  mixed = p.path("mixed_run")
  shutil.copytree(ref, mixed)
  shutil.copy(os.path.join(other, "descriptions.csv"), mixed)
  p.refusal("results: new descriptions.csv beside the old run (stability)",
            p.script("stability.py", f"--results_dir={mixed}",
                     "--num_resamples=2"), "descriptions.csv")
  p.refusal("results: new descriptions.csv beside the old run (report)",
            p.script("make_report.py", f"--results_dir={mixed}",
                     "--num_thumbs=0", f"--out={p.path('mixed.html')}"),
            "descriptions.csv")
  killed = p.path("killed_run")
  shutil.copytree(ref, killed)
  # What an interrupted write of main leaves: a new neurons.jsonl too.
  shutil.copy(os.path.join(other, "neurons.jsonl"), killed)
  shutil.copy(os.path.join(other, "descriptions.csv"), killed)
  p.refusal("results: a run cut short after two files (stability)",
            p.script("stability.py", f"--results_dir={killed}",
                     "--num_resamples=2"), "killed_run")

  # kill -9 while results are written: the previous run must stay whole.
  # Killed at several moments of the write.
  states = []
  for delay in (0.0, 0.001, 0.003, 0.01, 0.03):
    kill_run = p.path("kill_run")
    shutil.rmtree(kill_run, ignore_errors=True)
    shutil.copytree(ref, kill_run)
    states.append(_kill_during_write(p, kill_run, other, delay))
  verdict = ("accepted" if "accepted" in states else "other"
             if "refused" in states or "whole" not in states else "survived")
  p.fault("results: kill -9 while written (5 moments)", verdict,
          f"the folder afterwards: {states}")

  # arrays.json of a real run pointing a layer at another layer's array.
  edited = p.path("edited_ref")
  shutil.copytree(ref, edited)
  _edit_json(os.path.join(edited, "arrays.json"), lambda v: v[
      "activations"].update(layer3=v["activations"]["layer4"]))
  p.refusal("results: arrays.json points layer3 at layer4's array",
            p.script("stability.py", f"--results_dir={edited}",
                     "--num_resamples=2", "--layers=layer3",
                     f"--out_dir={p.path('edited_out')}"), "layer3")

  # Run folders that name code.
  planted = p.path("planted_run")
  shutil.copytree(p.synth, planted)
  _edit_json(os.path.join(planted, "config.json"),
             lambda v: v.update(target_model="probe_planted_mod:make"))
  env = dict(p.env)
  p.env = dict(env, PYTHONPATH=p.repo + os.pathsep + p.path("mod"))
  result = p.script("weight_analysis.py", f"--results_dir={planted}",
                    "--layer_in=layer4", "--layer_out=fc")
  p.env = env
  if os.path.exists(p.path("marker")):
    p.fault("run folder names code (weight_analysis)", "accepted",
            "the module named in config.json was imported")
    os.remove(p.path("marker"))
  else:
    p.refusal("run folder names code (weight_analysis)", result,
              "target_model")

  # A full disk (root only: a small tmpfs).
  if os.geteuid() == 0 and shutil.which("mount"):
    _full_disk_faults(p, ref)
  else:
    print("not root: full-disk faults skipped", flush=True)


_RUN_FILES = ("descriptions.csv", "neurons.jsonl", "concepts.txt",
              "image_ids.txt", "arrays.json")


def _files(run: str) -> dict[str, bytes | None]:
  out = {}
  for name in _RUN_FILES:
    try:
      with open(os.path.join(run, name), "rb") as f:
        out[name] = f.read()
    except OSError:
      out[name] = None
  return out


def _kill_during_write(p: Probe, run: str, other: str, delay: float
                       ) -> str | None:
  """kill -9 a describe run of other options into `run` (a copy of the
  reference run) `delay` seconds after it starts writing its results
  (the first temporary in the folder or beside it).

  Returns:
    "whole" if the folder then holds the previous run or the new one,
    whole; "refused" if a reader refuses it; "accepted" if a reader takes
    a mixed folder; None if the write could not be caught.
  """
  before, after = _files(run), _files(other)
  parent = os.path.dirname(run)
  for name in os.listdir(parent):  # What an earlier kill left.
    if name.startswith(".tmp-"):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
  proc = subprocess.Popen(
      [sys.executable, os.path.join(p.repo, "scripts", "describe_neurons.py"),
       f"--config={p.repo}/configs/resnet18_cifar100.py:smoke",
       f"--d_probe=folder:{p.path('probe')}",
       f"--concept_set={p.path('concepts.txt')}", f"--result_dir={run}",
       f"--activation_dir={p.path('other_cache')}",
       "--target_layers=layer2,layer3,layer4", "--batch_size=8",
       "--config.similarity_kwargs.top_k=3"],
      cwd=p.repo, env=p.env, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  killed = False
  while time.time() < deadline and proc.poll() is None:
    if (any(n.startswith(".tmp-") for n in os.listdir(parent))
        or any(n.startswith(".tmp-") for n in os.listdir(run))):
      time.sleep(delay)
      proc.send_signal(signal.SIGKILL)
      killed = True
      break
    time.sleep(0.0002)
  proc.wait()
  if not killed:
    return None
  now = _files(run)
  if now == before or now == after:
    return "whole"
  rc, _, _ = p.script("stability.py", f"--results_dir={run}",
                      "--num_resamples=2", f"--out_dir={p.path('kill_out')}")
  return "accepted" if rc == 0 else "refused"


def _neurons_or_none(run):
  try:
    return _neurons(run)
  except OSError:
    return None


def _full_disk_faults(p: Probe, ref: str) -> None:
  mount = p.path("full")
  os.makedirs(mount, exist_ok=True)

  def tmpfs(size):
    subprocess.run(["umount", mount], capture_output=True, check=False)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                    mount], check=True)

  try:
    # The cache on a full disk while the tokenizer is saved.
    for size in ("1200k", "1700k"):
      tmpfs(size)
      rc, err, _ = p.describe(p.path("full_tok_res"),
                              os.path.join(mount, "cache"))
      last = err.strip().splitlines()[-1] if err.strip() else ""
      ok = (rc in (1, 2) and "Traceback" not in err and "No space" in last
            and mount in last and len(last) <= 307)
      p.fault(f"full disk: tokenizer save ({size})",
              "survived" if ok else ("traceback" if "Traceback" in err
                                     else "other"), last[:160])
    # Results on a full disk: the previous run must stay whole.
    tmpfs("4m")
    res = os.path.join(mount, "res")
    shutil.copytree(ref, res)
    filler = os.path.join(mount, "filler")
    free = shutil.disk_usage(mount).free
    with open(filler, "wb") as f:
      f.write(b"\0" * max(0, free - 30_000))
    rc, err, _ = p.describe(res, p.path("ref_cache"),
                            "--config.similarity_kwargs.top_k=3")
    last = err.strip().splitlines()[-1] if err.strip() else ""
    os.remove(filler)
    whole = _neurons_or_none(res) == _neurons(ref)
    rc2, err2, _ = p.script("stability.py", f"--results_dir={res}",
                            "--num_resamples=2", f"--out_dir={p.path('o')}")
    ok = (rc in (1, 2) and "Traceback" not in err and "No space" in last
          and res in last and whole and rc2 == 0)
    p.fault("full disk: results written", "survived" if ok else (
        "traceback" if "Traceback" in err else "other"),
            f"rc={rc} whole={whole} {last[:140]}")
  finally:
    subprocess.run(["umount", mount], capture_output=True, check=False)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repo", default=".", help="the checkout to probe")
  parser.add_argument("--work", default="/tmp/jax_dissect_probe")
  parser.add_argument("--json", default="", help="write the outcomes here")
  args = parser.parse_args()
  probe = Probe(args.repo, args.work)
  probe.setup()
  t0 = time.time()
  bad_inputs(probe)
  faults(probe)
  counts = collections.Counter((o.kind, o.verdict) for o in probe.outcomes)
  for o in probe.outcomes:
    print(f"{o.kind:5s} {o.verdict:9s} {o.name}: {o.detail}")
  inputs = [o for o in probe.outcomes if o.kind == "input"]
  faults_ = [o for o in probe.outcomes if o.kind == "fault"]
  print(f"\n{probe.repo}: {time.time() - t0:.0f} s")
  print(f"bad inputs tried: {len(inputs)}; one-line errors: "
        f"{counts['input', 'one-line']}; unclear errors: "
        f"{counts['input', 'unclear']}; tracebacks: "
        f"{counts['input', 'traceback']}; nonsense accepted: "
        f"{counts['input', 'accepted']}")
  print(f"faults tried: {len(faults_)}; survived (identical results or the "
        f"right one-line refusal): {counts['fault', 'survived']}; other: "
        f"{counts['fault', 'other']}; accepted: "
        f"{counts['fault', 'accepted']}; tracebacks: "
        f"{counts['fault', 'traceback']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump([dataclasses.asdict(o) for o in probe.outcomes], f, indent=1)


if __name__ == "__main__":
  main()
