"""Helpers for tests comparing with torchvision: random ResNets, hooks."""

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed (install the torch extra: "
    "pip install -e '.[torch]'); equivalence tests need it")
torchvision = pytest.importorskip(
    "torchvision", reason="torchvision is not installed (torch extra)")


def random_torchvision_resnet(name: str, seed: int = 0):
  """torchvision resnet18/50, random weights, non-trivial BatchNorm, eval."""
  torch.manual_seed(seed)
  model = getattr(torchvision.models, name)(weights=None).eval()
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        c = module.num_features
        module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
        module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        module.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    model.fc.bias.copy_(torch.randn(model.fc.out_features, generator=gen))
  return model


def state_dict_numpy(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def torch_outputs(model, images_nhwc: np.ndarray, layers: list[str]
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Forward-hook outputs of `layers` (NCHW numpy) and the logits."""
  outputs, handles = {}, []
  modules = dict(model.named_modules())
  for name in layers:
    def hook(_, __, out, name=name):
      outputs[name] = out.detach().numpy().copy()
    handles.append(modules[name].register_forward_hook(hook))
  try:
    with torch.no_grad():
      logits = model(torch.from_numpy(
          np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))).numpy()
  finally:
    for h in handles:
      h.remove()
  return outputs, logits
