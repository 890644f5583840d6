"""LoRAs and textual-inversion embeddings for the add-on tests, made here with peft.

A LoRA is made the way trainers make one: peft's ``LoraConfig`` on the model's attention
projections, with random (non-zero) ``lora_B`` so that it changes pixels, read out with
``get_peft_model_state_dict`` and saved in two formats:

* diffusers / PEFT: ``save_lora_weights`` (``pytorch_lora_weights.safetensors``, keys
  ``unet.….lora_A.weight``), as ``diffusers`` scripts save;
* kohya / A1111: one ``.safetensors`` with ``lora_unet_…`` / ``lora_te_…`` (SDXL:
  ``lora_te1_…``, ``lora_te2_…``) modules and ``.lora_down.weight``, ``.lora_up.weight``,
  ``.alpha`` (kohya-ss/sd-scripts ``networks/lora.py``: ``LoRANetwork.LORA_PREFIX_UNET =
  "lora_unet"``, ``LORA_PREFIX_TEXT_ENCODER = "lora_te"``, SDXL ``"lora_te1"`` / ``"lora_te2"``;
  a module's name is its dotted path with ``_`` for ``.``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _lora_state(
    module: torch.nn.Module, targets: list[str], seed: int, rank: int, alpha: float
) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    inject_adapter_in_model(config, module)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.3)  # a visible change, not peft's tiny init
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(module).items()}


def make_lora(
    model: Path, seed: int = 1, *, rank: int = 4, alpha: float = 4.0, text: bool = True
) -> dict[str, dict[str, torch.Tensor]]:
    """Per component (``unet``, ``text_encoder``[, ``text_encoder_2``]): peft LoRA tensors."""
    out = {
        "unet": _lora_state(
            UNet2DConditionModel.from_pretrained(model / "unet"), UNET_TARGETS, seed, rank, alpha
        )
    }
    if text:
        out["text_encoder"] = _lora_state(
            CLIPTextModel.from_pretrained(model / "text_encoder"),
            TE_TARGETS,
            seed + 100,
            rank,
            alpha,
        )
        if (model / "text_encoder_2").is_dir():
            enc2 = CLIPTextModelWithProjection.from_pretrained(model / "text_encoder_2")
            out["text_encoder_2"] = _lora_state(enc2, TE_TARGETS, seed + 200, rank, alpha)
    return out


def save_diffusers(layers: dict[str, dict[str, torch.Tensor]], folder: Path, *, xl: bool) -> Path:
    """diffusers' own writer: a folder with ``pytorch_lora_weights.safetensors``."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    kwargs = {f"{k}_lora_layers": v for k, v in layers.items()}
    writer = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    writer.save_lora_weights(folder, safe_serialization=True, **kwargs)
    return folder


def save_kohya(
    layers: dict[str, dict[str, torch.Tensor]], path: Path, *, xl: bool, alpha: float = 4.0
) -> Path:
    """The kohya / A1111 single file (see the module docstring for the key layout)."""
    prefixes = {
        "unet": "lora_unet",
        "text_encoder": "lora_te1" if xl else "lora_te",
        "text_encoder_2": "lora_te2",
    }
    tensors: dict[str, torch.Tensor] = {}
    for component, state in layers.items():
        for key, value in state.items():
            module, _, kind = key.rpartition(".lora_")
            name = f"{prefixes[component]}_{module.replace('.', '_')}"
            part = "lora_down" if kind == "A.weight" else "lora_up"
            tensors[f"{name}.{part}.weight"] = value.contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
    return path
