"""train_sae: devices, seeds, streams, files, fit figures, AuxK, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_dissect import features
from jax_dissect.analyses.features import model
from jax_dissect.analyses.features import streams
from jax_dissect.analyses.features import training
from tests.helpers import planted_features as planted

# Parameters trained on 1 and on 8 devices differ by the rounding of the
# global sums (one reduction vs per-device partial sums and an all-reduce).
# Measured: at most 3.3e-7 after 320 steps (values up to ~0.6).
DEVICE_ATOL = 1e-5


@pytest.fixture(scope="module")
def small():
  return planted.superposition(n=2048, num_concepts=64, width=32)


def _train(data, **kw):
  kw = {"batch_size": 256, "epochs": 10, "devices": 1, **kw}
  return features.train_sae(data.acts, 128, **kw)


def test_one_and_eight_devices_give_the_same_parameters(small):
  assert jax.local_device_count() == 8  # tests/conftest.py
  one = _train(small, devices=1)
  eight = _train(small, devices=8)
  assert one.config["num_devices"] == 1 and eight.config["num_devices"] == 8
  assert one.config["steps"] == eight.config["steps"] == 80
  for name in model.PARAM_NAMES:
    np.testing.assert_allclose(eight.params[name], one.params[name],
                               rtol=0, atol=DEVICE_ATOL, err_msg=name)
  assert abs(eight.fit["fraction_of_variance_explained"] -
             one.fit["fraction_of_variance_explained"]) < 1e-5


def test_same_seed_same_model_other_seed_another(small):
  a = _train(small, epochs=1)
  b = _train(small, epochs=1)
  c = _train(small, epochs=1, seed=1)
  for name in model.PARAM_NAMES:
    np.testing.assert_array_equal(a.params[name], b.params[name])
  assert np.abs(a.params["w_dec"] - c.params["w_dec"]).max() > 0.1


def test_save_load_round_trip(small, tmp_path):
  sae = _train(small, epochs=2)
  path = sae.save(tmp_path / "sae.npz")
  back = features.load_sae(path)
  for name in model.PARAM_NAMES:
    np.testing.assert_array_equal(back.params[name], sae.params[name])
  np.testing.assert_array_equal(back.mean, sae.mean)
  assert (back.scale, back.k) == (sae.scale, sae.k)
  assert back.fit == sae.fit and back.config == sae.config
  np.testing.assert_array_equal(back.encode(small.acts),
                                sae.encode(small.acts))
  assert [p.name for p in tmp_path.iterdir()] == ["sae.npz"]  # Atomic.


def test_load_rejects_other_files(tmp_path):
  path = tmp_path / "x.npz"
  np.savez(path, a=np.zeros(3))
  with pytest.raises(ValueError, match="cannot read a SparseAutoencoder"):
    features.load_sae(path)


def test_fit_figures_match_encode_decode(small):
  sae = _train(small, epochs=4)
  x = small.acts
  codes = sae.encode(x)
  x_hat = sae.decode(codes)
  fve = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
  assert sae.fit["fraction_of_variance_explained"] == pytest.approx(
      fve, abs=1e-4)
  assert sae.fit["mean_l0"] == pytest.approx((codes > 0).sum(1).mean())
  assert sae.fit["dead_fraction"] == pytest.approx(
      1 - (codes > 0).any(0).mean())
  assert (codes >= 0).all() and ((codes > 0).sum(1) <= sae.k).all()
  assert features.evaluate_sae(sae, x)[
      "fraction_of_variance_explained"] == pytest.approx(fve, abs=1e-4)
  # The decoder's rows (the features' directions) have unit norm.
  np.testing.assert_allclose(np.linalg.norm(sae.params["w_dec"], axis=1), 1,
                             atol=1e-5)


def test_npy_file_streamed_in_small_windows(small, tmp_path):
  path = tmp_path / "acts.npy"
  np.save(path, small.acts)
  # Windows of 512 rows (two float32 copies of 512 x 32).
  budget = 2 * 4 * 32 * 512
  sae = features.train_sae(str(path), 128, batch_size=256, epochs=10,
                           devices=1, memory_bytes=budget)
  assert sae.config["normalization_rows"] == 512
  assert sae.config["rows_seen"] == 10 * 2048
  in_memory = _train(small)
  # Measured: 0.61 streamed, 0.64 in memory (80 steps).
  assert sae.fit["fraction_of_variance_explained"] > 0.5
  assert sae.fit["fraction_of_variance_explained"] == pytest.approx(
      in_memory.fit["fraction_of_variance_explained"], abs=0.05)


def test_windows_and_batches_see_every_row_once_per_pass():
  x = np.arange(1000 * 2, dtype=np.float32).reshape(1000, 2)
  source = streams.as_source(x)
  for window, batch in ((300, 128), (50, 128), (1000, 100), (7, 3)):
    rng = np.random.default_rng(0)
    wins = list(streams.windows(source.blocks(rng, 64), window))
    assert max(len(w) for w in wins) == window
    parts = list(streams.batches(iter(wins), batch, rng))
    assert all(len(b) == batch for b in parts[:-1])
    got = np.concatenate(parts)
    assert sorted(got[:, 0].tolist()) == x[:, 0].tolist()
    assert not np.array_equal(got, x)  # Shuffled.


def test_stream_is_read_lazily_in_bounded_windows(small, monkeypatch):
  """A one-pass stream of 16 blocks of 128 rows with a 256-row window:
  when the first step runs, only the first window's rows have been read
  (memory stays bounded however long the stream)."""
  read = []

  def blocks():
    for lo in range(0, 2048, 128):
      read.append(lo)
      yield small.acts[lo:lo + 128]

  real = training._jitted_step  # pylint: disable=protected-access
  at_first_step = []

  def spy(*args):
    step = real(*args)

    def counted(*a):
      if not at_first_step:
        at_first_step.append(len(read))
      return step(*a)
    return counted
  monkeypatch.setattr(training, "_jitted_step", spy)
  budget = 2 * 4 * 32 * 256
  sae = features.train_sae(blocks(), 128, batch_size=64, devices=1,
                           memory_bytes=budget)
  assert at_first_step == [2], at_first_step  # 2 blocks = one window.
  assert len(read) == 16 and sae.config["rows_seen"] == 2048
  assert sae.fit["rows"] == 256  # The last window.


def test_one_pass_iterable_and_callable_sources(small):
  blocks = [small.acts[i:i + 300] for i in range(0, 2048, 300)]
  once = features.train_sae(iter(blocks), 128, batch_size=256, devices=1)
  assert once.config["source"] == "iterable"
  assert once.config["steps"] == 8 and once.config["rows_seen"] == 2048
  assert once.fit["measured_on"] == "last shuffle window"
  with pytest.raises(ValueError, match="needs a source that can be read"):
    features.train_sae(iter(blocks), 128, epochs=2, devices=1)
  again = features.train_sae(lambda: iter(blocks), 128, batch_size=256,
                             epochs=3, devices=1)
  assert again.config["rows_seen"] == 3 * 2048
  assert again.fit["measured_on"] == "all training rows"
  assert again.fit["rows"] == 2048


def test_token_maps_train_per_token_and_pool():
  rng = np.random.default_rng(0)
  maps = rng.standard_normal((64, 5, 16)).astype(np.float32)
  sae = features.train_sae(maps, 32, batch_size=64, epochs=2, devices=1)
  assert sae.config["rows_seen"] == 2 * 64 * 5
  per_token = sae.encode(maps, pool=None)
  assert per_token.shape == (64, 5, 32)
  np.testing.assert_array_equal(
      per_token.reshape(-1, 32), sae.encode(maps.reshape(-1, 16)))
  np.testing.assert_array_equal(sae.encode(maps), per_token.max(axis=1))
  np.testing.assert_allclose(sae.encode(maps, pool="mean"),
                             per_token.mean(axis=1), atol=1e-6)
  np.testing.assert_array_equal(sae.encode(maps, pool="cls"),
                                per_token[:, 0])


def test_kth_largest_equals_top_k_with_ties():
  rng = np.random.default_rng(0)
  for b, f, k in [(64, 128, 4), (64, 128, 16), (64, 128, 17), (8, 300, 128),
                  (8, 300, 129), (8, 300, 200)]:
    x = rng.standard_normal((b, f)).astype(np.float32)
    x[:, :6] = np.round(x[:, :6])  # Ties.
    x[0] = -np.inf
    x[1, 3:] = -np.inf
    want = jax.lax.top_k(jnp.asarray(x), k)[0][:, -1:]
    np.testing.assert_array_equal(
        np.asarray(jax.jit(model.kth_largest, static_argnums=1)(x, k)),
        np.asarray(want))


# ----------------------------------------------------------------------------
# AuxK.
# ----------------------------------------------------------------------------


@jax.jit
def _grads(params, x, dead, aux_coef):
  fn = jax.grad(lambda p: training._loss(  # pylint: disable=protected-access
      p, x, jnp.ones(x.shape[0]), dead, k=2, k_aux=4, aux_coef=aux_coef)[0])
  return fn(params)


def test_auxk_trains_only_the_dead_latents():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((64, 8)), jnp.float32)
  params = model.init_params(jax.random.key(0), 8, 16)
  dead = jnp.arange(16) >= 10
  plain = _grads(params, x, dead, 0.0)
  with_aux = _grads(params, x, dead, 1.0)
  live = ~np.asarray(dead)
  for name, axis in (("w_enc", 1), ("b_enc", 0), ("w_dec", 0)):
    diff = np.abs(np.asarray(with_aux[name] - plain[name]))
    diff = np.moveaxis(diff, axis, 0)
    assert diff[live].max() == 0, name
    assert diff[~live].max() > 0, name
  np.testing.assert_array_equal(with_aux["b_pre"], plain["b_pre"])
  # No dead latent: no AuxK term at all.
  none = jnp.zeros(16, bool)
  for name in model.PARAM_NAMES:
    np.testing.assert_array_equal(_grads(params, x, none, 1.0)[name],
                                  _grads(params, x, none, 0.0)[name])


def test_auxk_revives_latents_a_high_learning_rate_kills():
  """256 planted concepts, 256 latents, lr 0.03: without AuxK ~5% of the
  latents end dead (measured 12 of 256), with it none (measured 0)."""
  data = planted.superposition(n=8192, num_concepts=256, width=32)
  kw = {"lr": 3e-2, "dead_after": 16384, "batch_size": 1024, "epochs": 16,
        "devices": 1}
  without = features.train_sae(data.acts, 256, aux_coef=0.0, **kw)
  with_aux = features.train_sae(data.acts, 256, **kw)
  assert without.fit["dead_fraction"] >= 0.02, without.fit
  assert with_aux.fit["dead_fraction"] <= 1 / 256, with_aux.fit
  assert (with_aux.fit["fraction_of_variance_explained"] >=
          without.fit["fraction_of_variance_explained"] - 0.01)


# ----------------------------------------------------------------------------
# Bad input: one line, before training.
# ----------------------------------------------------------------------------

_ACTS = np.zeros((16, 4), np.float32)


@pytest.mark.parametrize("args, kwargs, match", [
    ((_ACTS, 0), {}, "num_features=0; must be an int >= 1"),
    ((_ACTS, -3), {}, "num_features=-3"),
    ((_ACTS, 2.5), {}, "num_features=2.5"),
    ((_ACTS, 8), {"k": 9}, "k=9 is larger than num_features=8"),
    ((_ACTS, 8), {"k": 0}, "k=0; must be a positive int"),
    ((_ACTS, 8), {"k_aux": 9}, "k_aux=9 is larger than num_features=8"),
    ((_ACTS, 8), {"lr": -1.0}, "lr=-1.0; must be a positive number"),
    ((_ACTS, 8), {"batch_size": 0}, "batch_size=0"),
    ((_ACTS, 8), {"kk": 1}, "unknown train_sae option"),
    ((_ACTS, 8), {"devices": 99}, "devices=99"),
    ((np.zeros(5), 8), {}, "expected \\(N, C\\) rows"),
    ((np.zeros((0, 4)), 8), {}, "activations is empty"),
    ((np.full((16, 4), np.nan), 8), {}, "NaN or inf"),
    (("/no/such.npy", 8), {}, "no such file"),
    ((iter([]), 8), {}, "empty iterable"),
    ((iter([np.zeros((4, 3)), np.zeros((4, 5))]), 8), {"batch_size": 4},
     "has 5 channels"),
    ((_ACTS, 8), {"seed": "x"}, "seed='x'"),
])
def test_bad_train_input_one_line_before_training(monkeypatch, args, kwargs,
                                                  match):
  def started(*a, **k):
    raise AssertionError("training started")
  monkeypatch.setattr(model, "init_params", started)
  with pytest.raises(ValueError, match=match) as e:
    features.train_sae(*args, **kwargs)
  msg = str(e.value)
  assert "\n" not in msg and len(msg) <= 300, msg


def test_bad_encode_input_one_line(small):
  sae = _train(small, epochs=1)
  for bad, match in ((np.zeros((3, 5)), "C=32"),
                     (np.zeros((3, 2, 32)), None)):
    if match is None:
      sae.encode(bad)  # A token map of the right width is fine.
      continue
    with pytest.raises(ValueError, match=match) as e:
      sae.encode(bad)
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="pool='cls'"):
    sae.encode(np.zeros((2, 3, 3, 32)), pool="cls")
  with pytest.raises(ValueError, match="pool='sum'"):
    sae.encode(np.zeros((2, 3, 32)), pool="sum")
  with pytest.raises(ValueError, match="F=128"):
    sae.decode(np.zeros((2, 7)))
