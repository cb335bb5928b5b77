"""The scale and precision benchmark suites run (tiny sizes)."""

from benchmarks import precision
from benchmarks import scale
from tests.helpers import cli as describe_cli


def test_scale_suite_runs_tiny():
  assert {"full", "quick"} <= set(scale.PRESETS)
  records = list(scale.run(device_counts=(2,), batch_size=2,
                           images={"resnet18_cifar100": 3}, texts=2,
                           repeats=1))
  devices = [r for r in records if r["measure"] == "devices"]
  assert {r["stage"] for r in devices} == {"activations", "clip_text"}
  assert all(r["devices"] == 2 and r["host_devices"] == 2 for r in devices)
  assert devices[0]["images_per_s"] > 0 and devices[1]["texts_per_s"] > 0
  (inputs,) = [r for r in records if r["measure"] == "input"]
  assert inputs["images_per_s_from_files"] > 0
  assert inputs["images_per_s_decoded"] > 0
  assert all("load_avg_1min" in r for r in records)


def test_precision_suite_runs_tiny(tmp_path):
  assert {"full", "quick"} <= set(precision.PRESETS)
  concepts = describe_cli.concepts_file(tmp_path)
  (record,) = precision.run(configs=("resnet18_cifar100:smoke",),
                            max_images=8, dtypes=("bfloat16",),
                            overrides={"concept_set": concepts,
                                       "devices": 1,
                                       "target_layers": "conv1,layer4"})
  assert record["dtype"] == "bfloat16" and record["num_images"] == 8
  # The runs share one cache directory: differences above 0 show that the
  # compute dtype is part of the cache keys of every forward pass.
  assert 0 < record["image_embeddings_max_abs_diff"] < 0.05
  assert 0 < record["text_embeddings_max_abs_diff"] < 0.05
  assert 0 < record["concept_activations_max_abs_diff"] < 0.05
  assert set(record["layers"]) == {"conv1", "layer4"}
  for layer in record["layers"].values():
    assert 0 < layer["activations_max_rel_diff"] < 0.1
    assert 0 <= layer["labels_changed"] <= 1
    if layer["changed_median_gap_float32"] is not None:
      assert 0 <= layer["changed_median_gap_float32"] <= (
          layer["changed_max_gap_float32"])
