"""The published numbers `jax-dissect reproduce` sets beside its own.

Each entry cites its source. Values are as printed (percentages as
percentages); None where a paper prints nothing.

- CLIP-Dissect: Oikarinen & Weng, "CLIP-Dissect: Automatic Description of
  Neuron Representations in Deep Vision Networks", ICLR 2023 (Tables 1-3).
- Stability: Cha & Weng, "Expanding CLIP-Dissect: Exploring the Impact of
  Activating Image Diversity and Stability" (the stability score table).
- Profiling: Li & Weng, "Profiling Vision Neural Networks with CLIP-Dissect"
  (Figure 3: layer profiles; Figure 4: interpretable share by tau).
"""

from __future__ import annotations

CLIP_DISSECT = "CLIP-Dissect (Oikarinen & Weng, ICLR 2023)"
STABILITY = "Expanding CLIP-Dissect (Cha & Weng)"
PROFILING = "Profiling Vision Neural Networks with CLIP-Dissect (Li & Weng)"

# Probe sets and concept sets by the keys the tables use, as the papers
# name them.
PROBE_NAMES = {"imagenet_val": "ImageNet val",
               "cifar100_train": "CIFAR100 train", "broden": "Broden",
               "imagenet_broden": "ImageNet val + Broden",
               "places365_val": "Places365 val"}
CONCEPT_NAMES = {"broden": "Broden", "3k": "3k", "10k": "10k", "20k": "20k",
                 "imagenet": "ImageNet"}
FN_NAMES = {"rank_reorder": "Rank reorder", "wpmi": "WPMI",
            "soft_wpmi": "SoftWPMI"}

# Table 1: ResNet-50 (ImageNet), final layer, soft_wpmi: mean cosine of
# label and class name (CLIP ViT-B/16 text space, all-mpnet-base-v2).
# (d_probe, concept set, CLIP cos, mpnet cos); the paper prints the row
# ImageNet val / 20k twice (the same numbers).
TABLE1 = (
    ("imagenet_val", "broden", 0.7393, 0.4201),
    ("imagenet_val", "3k", 0.7456, 0.4161),
    ("imagenet_val", "10k", 0.7661, 0.4696),
    ("imagenet_val", "20k", 0.7900, 0.5257),
    ("imagenet_val", "imagenet", 0.9766, 0.9458),
    ("cifar100_train", "20k", 0.7300, 0.3664),
    ("broden", "20k", 0.7407, 0.3945),
    ("imagenet_broden", "20k", 0.7900, 0.5233),
)
TABLE1_BASELINES = (
    ("Network Dissection", "Broden", "Broden", 0.6929, 0.2952),
    ("MILAN base", "ImageNet val", "-", 0.7080, 0.2788),
)

# Table 2: ResNet-18 (Places365), final layer, Broden probe and concept
# set: top-1 on the 267 of 365 classes whose name is a Broden label.
TABLE2 = {"top1": 58.05, "cos_clip": 0.9106, "cos_sentence": 0.7024,
          "n_classes_in_concepts": 267}
TABLE2_BASELINE = {"method": "Network Dissection", "top1": 43.82,
                   "cos_clip": 0.8828, "cos_sentence": 0.6299}

# Table 3: ResNet-50 final layer; mpnet cos with the 20k concept set and
# top-1 accuracy (%) with the ImageNet classes as concept set, per probe set.
TABLE3_PROBES = ("cifar100_train", "broden", "imagenet_val",
                 "imagenet_broden")
TABLE3_FNS = ("rank_reorder", "wpmi", "soft_wpmi")
TABLE3 = {
    ("cos_sentence", "rank_reorder"): (0.3250, 0.3857, 0.4901, 0.5040,
                                       0.4262),
    ("cos_sentence", "wpmi"): (0.3460, 0.3878, 0.5302, 0.5267, 0.4477),
    ("cos_sentence", "soft_wpmi"): (0.3664, 0.3945, 0.5257, 0.5233, 0.4525),
    ("top1", "rank_reorder"): (36.30, 57.50, 89.80, 89.90, 68.38),
    ("top1", "wpmi"): (23.80, 47.10, 87.00, 86.90, 61.20),
    ("top1", "soft_wpmi"): (46.20, 70.50, 95.00, 95.40, 76.78),
}

# Stability score (%): ResNet-50 layer1..layer4 pooled (3840 neurons),
# Broden probe; per configuration the paper prints two rows of (k=5 to
# k=10, k=5 to k=16).
STABILITY_LAYERS = ("layer1", "layer2", "layer3", "layer4")
STABILITY_TABLE = {
    ("imagenet", "soft_wpmi"): ((99.947917, 99.947917),
                                (99.973958, 99.973958)),
    ("imagenet", "wpmi"): ((100.0, 100.0), (99.973958, 99.973958)),
    ("10k", "soft_wpmi"): ((99.869792, 99.869792), (99.843750, 99.843750)),
    ("10k", "wpmi"): ((100.0, 100.0), (100.0, 100.0)),
}

# Profiling Figure 4: share of interpretable neurons (%) at tau.
PROFILE_MODELS = {
    "resnet50": ("ResNet-50 (ImageNet)",
                 ("conv1", "layer1", "layer2", "layer3", "layer4")),
    "vit_b16": ("ViT B/16", ("vit.encoder.layer.0", "vit.encoder.layer.3",
                             "vit.encoder.layer.6", "vit.encoder.layer.9",
                             "classifier")),
    "resnet18_places365": ("ResNet-18 (Places-365)",
                           ("conv1", "layer1", "layer2", "layer3",
                            "layer4")),
}
PROFILE_INTERPRETABLE = (
    ("vit_b16", 0.16, 37.8),
    ("vit_b16", 0.12, 61.0),
    ("resnet18_places365", 0.16, 69.7),
    ("resnet50", 0.16, 77.8),
)
