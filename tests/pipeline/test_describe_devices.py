"""describe_neurons on 8 host devices equals the 1-device run (subprocesses,
XLA_FLAGS=--xla_force_host_platform_device_count=8, --config.devices=1 or
all 8).

Both runs are on the same 8-device platform: XLA:CPU compiles some fusions
differently in a process that has 4 or more host devices, even for a
program on one of them (measured: last-bit differences in a ResNet's
pooled activations between a 1-device process and an 8-device process
using one device), so "one device" here is one device of that platform,
as it is for a user with 8 GPUs who sets devices=1.
"""

import numpy as np

from tests.helpers import cli as describe_cli

NUM_IMAGES = 21  # Not divisible by 8 or by the batch size 6.


def test_8_devices_equal_1_device(tmp_path):
  concepts = describe_cli.concepts_file(tmp_path)
  common = [f"--concept_set={concepts}", f"--config.max_images={NUM_IMAGES}",
            "--config.batch_size=6", "--config.shard_images=10"]
  runs, logs = {}, {}
  for devices in (1, 8):
    result = tmp_path / f"results{devices}"
    done = describe_cli.run(describe_cli.args(
        result, tmp_path / f"cache{devices}", *common,
        f"--config.devices={devices}"), host_devices=8)
    assert done.returncode == 0, done.stderr[-3000:]
    runs[devices], logs[devices] = result, done.stderr

  one = describe_cli.cached_arrays(runs[1])
  eight = describe_cli.cached_arrays(runs[8])
  assert sorted(one) == sorted(eight) and len(one) == 3 + 5
  # Every device computes whole batches, so the pooled activations, the
  # embeddings and P are the same bits as on one device (the kernels too,
  # test_sharding.py), and so are the labels and the whole CSV.
  for name, want in one.items():
    assert want.shape[0] in (NUM_IMAGES, len(describe_cli.CONCEPTS.split()))
    np.testing.assert_array_equal(eight[name], want, err_msg=name)
  assert describe_cli.assert_same_labels(runs[8], runs[1], tie=0, atol=0) == 0
  assert ((runs[8] / "descriptions.csv").read_bytes()
          == (runs[1] / "descriptions.csv").read_bytes())
  # The 3 cache shards (10, 10, 1 images) are one stream of batches: one
  # forward pass over all 21 images, not one per shard.
  assert logs[8].count(f"activations: {NUM_IMAGES} images of 5 layer(s)") == 1

  stages = describe_cli.read_json(runs[8] / "config.json")["stages"]
  for stage in ("clip_text", "clip_images", "activations",
                "similarity_layer4"):
    assert stages[stage]["devices"] == 8, (stage, stages[stage])
    assert stages[stage]["processes"] == 1
  # Both image stages: the rate from files and without the input waits
  # (the rate on pre-decoded arrays), in config.json and in the log.
  for stage in ("clip_images", "activations"):
    assert stages[stage]["images"] == NUM_IMAGES
    assert stages[stage]["images_per_s"] > 0
    assert stages[stage]["input_wait_s"] >= 0
    assert f"stage {stage}: {NUM_IMAGES} images at " in logs[8]
  assert logs[8].count("images/s without the") == 2
  stages = describe_cli.read_json(runs[1] / "config.json")["stages"]
  assert stages["activations"]["devices"] == 1
