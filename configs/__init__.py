"""The repository's configs/: thin files over jax_dissect/configs/, the
configs that ship with the package (kept so that paths such as
configs/resnet18_cifar100.py and imports of configs.shared_data keep
working)."""
