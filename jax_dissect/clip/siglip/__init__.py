"""SigLIP / SigLIP 2 in Flax: the concept-activation matrix P from SigLIP.

transformers 4.57 has no Flax SigLIP, so the towers are written here:

- config: settings from config.json (model_type "siglip" or "siglip2").
- model: the linen towers, image_embeds / text_embeds (unnormalised) and
  cosine (P).
- convert: PyTorch state dict (numpy) -> Flax parameters.
- load: a checkpoint from a directory or hub id: weights (safetensors,
  no torch), tokenizer (AutoTokenizer), preprocessing (ImageTransform).
- save: the inverse: a checkpoint directory as transformers writes it.
- embedder: SiglipEmbedder, SigLIP as the backbone of P (the
  jax_dissect.clip.Embedder interface; clip.load_backbone picks it for
  model_type "siglip" / "siglip2").
(`python scripts/benchmark.py --suite=siglip` times the image tower beside
CLIP's and PyTorch SigLIP's.)

Submodules are imported by name (`from jax_dissect.clip.siglip import load`);
importing the package imports none of them.
"""
