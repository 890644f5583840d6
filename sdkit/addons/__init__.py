"""Add-ons people bring from A1111, ComfyUI and diffusers: LoRA, embeddings, VAE, ControlNet,
hires fix and the SDXL refiner, each loaded with diffusers' own loaders and each recorded (name
and SHA-256) in the picture's Recipe, infotext and signed manifest."""

from sdkit.addons._record import ADDON_KINDS, AddonKind, AddonRecord

__all__ = ["ADDON_KINDS", "AddonKind", "AddonRecord"]
