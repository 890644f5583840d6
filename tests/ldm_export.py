"""Export a diffusers pipeline as one original-format (LDM / A1111) checkpoint, for tests.

This is the inverse of the conversion diffusers does in ``from_single_file``, written here from
the two layouts (CompVis ``ldm.modules.diffusionmodules.openaimodel.UNetModel`` and
``ldm.modules.diffusionmodules.model.Encoder/Decoder``, OpenAI CLIP / OpenCLIP text towers), so
a round trip through diffusers' loader checks our loader against an independent mapping.

Layouts written:

* UNet -> ``model.diffusion_model.*`` (``input_blocks``/``middle_block``/``output_blocks``,
  ``time_embed``, ``label_emb`` for SDXL's micro-conditioning).
* VAE -> ``first_stage_model.*`` (``down.N.block.M``, ``mid.attn_1`` with q/k/v/proj_out stored
  as 1x1 convolutions, as the original checkpoints store them).
* SD 1.x text encoder -> ``cond_stage_model.transformer.text_model.*`` (Hugging Face CLIP names).
* SD 2.x text encoder -> ``cond_stage_model.model.*`` (OpenCLIP: fused ``in_proj``,
  ``transformer.resblocks.N``, ``positional_embedding``, ``token_embedding``, ``ln_final``).
* SDXL -> ``conditioner.embedders.0.transformer.text_model.*`` (CLIP ViT-L) and
  ``conditioner.embedders.1.model.*`` (OpenCLIP bigG, ``text_projection`` stored as
  ``[width, embed_dim]``, the transpose of the Linear weight); the refiner has only
  ``conditioner.embedders.0.model.*``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

TextLayout = Literal["sd1", "sd2", "sdxl", "sdxl_refiner"]
StateDict = dict[str, torch.Tensor]

_RESNET_UNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)
_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_VAE_FIXED = {
    "conv_in.": "conv_in.",
    "conv_out.": "conv_out.",
    "conv_norm_out.": "norm_out.",
}
_VAE_ATTN = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}
_OPENCLIP_LAYER = (
    ("self_attn.out_proj.", "attn.out_proj."),
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
)


def _rename(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def _fixed(key: str, table: Mapping[str, str]) -> str | None:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> StateDict:
    """Rename a diffusers ``UNet2DConditionModel`` state dict to the LDM ``UNetModel`` layout."""
    per = int(config["layers_per_block"])
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (
            r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)",
            lambda m: (
                f"input_blocks.{1 + int(m[1]) * (per + 1) + int(m[2])}.0."
                + _rename(m[3], _RESNET_UNET)
            ),
        ),
        (
            r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
            lambda m: f"input_blocks.{1 + int(m[1]) * (per + 1) + int(m[2])}.1.{m[3]}",
        ),
        (
            r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
            lambda m: f"input_blocks.{1 + int(m[1]) * (per + 1) + per}.0.op.{m[2]}",
        ),
        (
            r"mid_block\.resnets\.(\d)\.(.+)",
            lambda m: f"middle_block.{2 * int(m[1])}." + _rename(m[2], _RESNET_UNET),
        ),
        (r"mid_block\.attentions\.0\.(.+)", lambda m: f"middle_block.1.{m[1]}"),
        (
            r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)",
            lambda m: (
                f"output_blocks.{int(m[1]) * (per + 1) + int(m[2])}.0."
                + _rename(m[3], _RESNET_UNET)
            ),
        ),
        (
            r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
            lambda m: f"output_blocks.{int(m[1]) * (per + 1) + int(m[2])}.1.{m[3]}",
        ),
        (
            r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)",
            lambda m: (
                f"output_blocks.{int(m[1]) * (per + 1) + per}."
                f"{2 if up_has_attn[int(m[1])] else 1}.conv.{m[2]}"
            ),
        ),
    ]
    out: StateDict = {}
    for key, value in state.items():
        new = _fixed(key, _UNET_FIXED)
        for pattern, build in rules:
            if new is not None:
                break
            match = re.fullmatch(pattern, key)
            if match:
                new = build(match)
        if new is None:
            raise KeyError(f"no LDM name for UNet key {key!r}")
        out[new] = value
    return out


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> StateDict:
    """Rename a diffusers ``AutoencoderKL`` state dict to the LDM ``AutoencoderKL`` layout."""
    levels = len(config["block_out_channels"])
    out: StateDict = {}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        new: str | None = None
        if part in ("quant_conv", "post_quant_conv"):
            new = key
        elif (fixed := _fixed(rest, _VAE_FIXED)) is not None:
            new = f"{part}.{fixed}"
        elif m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
            level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
            new = f"{part}.{m[1]}.{level}.block.{m[3]}.{m[4].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
            new = f"{part}.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
            new = f"{part}.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):
            new = (
                f"{part}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}"
            )
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
            new = f"{part}.mid.attn_1.{_fixed(m[1], _VAE_ATTN)}"
            if value.ndim == 2:  # the original stores the projections as 1x1 convolutions
                value = value[:, :, None, None]
        if new is None:
            raise KeyError(f"no LDM name for VAE key {key!r}")
        out[new] = value
    return out


def _text_keys(state: Mapping[str, torch.Tensor]) -> StateDict:
    # transformers >= 5.6 flattens CLIPTextModel (no ``text_model.`` prefix); undo that here.
    return {
        k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v
        for k, v in state.items()
    }


def clip_to_ldm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Hugging Face CLIP text model -> ``transformer.text_model.*`` (the LDM ``FrozenCLIPEmbedder``)."""
    return {
        f"transformer.{k}": v for k, v in _text_keys(state).items() if k != "text_projection.weight"
    }


def clip_to_openclip(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Hugging Face CLIP text model -> OpenCLIP text tower names (``FrozenOpenCLIPEmbedder``)."""
    src = _text_keys(state)
    out: StateDict = {}
    fixed = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    for key, value in src.items():
        if key in fixed:
            out[fixed[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # OpenCLIP: x @ text_projection
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key):
            layer, rest = m[1], m[2]
            block = f"transformer.resblocks.{layer}."
            if q := re.fullmatch(r"self_attn\.q_proj\.(weight|bias)", rest):
                kind = q[1]
                parts = [
                    src[f"text_model.encoder.layers.{layer}.self_attn.{p}_proj.{kind}"]
                    for p in "qkv"
                ]
                out[f"{block}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
            elif re.fullmatch(r"self_attn\.[kv]_proj\.(weight|bias)", rest):
                continue  # fused into in_proj with q
            else:
                renamed = _rename(rest, _OPENCLIP_LAYER)
                if renamed == rest:
                    raise KeyError(f"no OpenCLIP name for text key {key!r}")
                out[block + renamed] = value
        else:
            raise KeyError(f"no OpenCLIP name for text key {key!r}")
    return out


def _prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> StateDict:
    return {prefix + k: v for k, v in state.items()}


def pipeline_to_ldm(pipe: Any, layout: TextLayout | None = None) -> StateDict:
    """Build one LDM-format state dict from a diffusers SD / SDXL pipeline.

    Args:
        pipe: a ``StableDiffusion*Pipeline`` or ``StableDiffusionXL*Pipeline``.
        layout: where the text encoders go; inferred when ``None``: SDXL when the pipeline has a
            ``text_encoder_2`` (the refiner when it has no ``text_encoder``), SD 2.x when the
            text encoder uses ``gelu`` (OpenCLIP), else SD 1.x.
    """
    te = getattr(pipe, "text_encoder", None)
    te2 = getattr(pipe, "text_encoder_2", None)
    if layout is None:
        if te2 is not None:
            layout = "sdxl" if te is not None else "sdxl_refiner"
        else:
            layout = "sd2" if te.config.hidden_act == "gelu" else "sd1"
    ckpt: StateDict = {}
    ckpt |= _prefixed(
        "model.diffusion_model.", unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    )
    ckpt |= _prefixed("first_stage_model.", vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if layout == "sd1":
        ckpt |= _prefixed("cond_stage_model.", clip_to_ldm(te.state_dict()))
    elif layout == "sd2":
        ckpt |= _prefixed("cond_stage_model.model.", clip_to_openclip(te.state_dict()))
    elif layout == "sdxl":
        ckpt |= _prefixed("conditioner.embedders.0.", clip_to_ldm(te.state_dict()))
        ckpt |= _prefixed("conditioner.embedders.1.model.", clip_to_openclip(te2.state_dict()))
    else:
        ckpt |= _prefixed("conditioner.embedders.0.model.", clip_to_openclip(te2.state_dict()))
    return ckpt


def export_ldm_checkpoint(
    pipe: Any,
    path: str | Path,
    *,
    layout: TextLayout | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Save ``pipe`` as one original-format ``.safetensors`` checkpoint (see :func:`pipeline_to_ldm`).

    Args:
        pipe: the diffusers pipeline.
        path: destination file.
        layout: text-encoder layout, inferred when ``None``.
        extra: more tensors to store as they are (e.g. ``{"v_pred": torch.tensor([])}``).
    """
    ckpt = pipeline_to_ldm(pipe, layout)
    ckpt |= dict(extra or {})
    out = Path(path)
    save_file({k: v.detach().contiguous().clone() for k, v in ckpt.items()}, str(out))
    return out
