"""Image files as preprocessed tensors, for the PyTorch workers.

torchvision's ImageNet evaluation transform and OpenAI CLIP's
preprocessing, and a Dataset of image files through one of them.
"""

from PIL import Image
import torch
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def imagenet_transform(size: int = 224):
  """torchvision's eval transform: resize to size * 256 / 224, centre
  crop to size (256 and 224 at the usual size)."""
  return transforms.Compose([
      transforms.Resize(size * 256 // 224), transforms.CenterCrop(size),
      transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN,
                                                  IMAGENET_STD)])


def clip_transform(size: int):
  """OpenAI CLIP's preprocessing: bicubic resize, centre crop, CLIP's
  mean and std."""
  return transforms.Compose([
      transforms.Resize(size, interpolation=transforms.InterpolationMode
                        .BICUBIC),
      transforms.CenterCrop(size), transforms.ToTensor(),
      transforms.Normalize(CLIP_MEAN, CLIP_STD)])


class Photos(torch.utils.data.Dataset):
  """Image files -> preprocessed (3, S, S) float32 tensors."""

  def __init__(self, paths, transform):
    self.paths, self.transform = paths, transform

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    with Image.open(self.paths[i]) as image:
      return self.transform(image.convert("RGB"))
