"""Train sdkit's default model: a small latent diffusion model of coloured shapes.

The result is an ordinary Stable Diffusion pipeline folder (``model_index.json``, ``unet``,
``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``) that ``Generator.from_pretrained``
loads like any SD 1.x checkpoint: ``StableDiffusionPipeline``, ``AutoencoderKL``,
``UNet2DConditionModel``, ``CLIPTextModel`` with the real CLIP BPE tokenizer.

Phases (all seeded; the same command gives the same weights on the same machine and library
versions):

1. **Data**: ``--images`` scenes from ``tools/shapes.py`` (shape, colour, background,
   position, size), rendered at 256 px and kept as 32 x 32 block means; held-out shape/colour
   pairs are never drawn.
2. **Autoencoder**: analytic, not trained (``build_vae``): an ``AutoencoderKL`` whose encoder
   averages 8 x 8 pixel blocks (r, g, b and their mean: 4 latent channels) and whose decoder
   repeats each latent pixel's r, g, b over its block. The script checks it against the block
   means before it goes on.
3. **Latents**: the block means, scaled to unit variance (as SD's 0.18215 does for its VAE).
4. **Text encoder**: learns to parse captions first (``pretrain_text_encoder``): linear heads
   name the shape, both colours, the position and the size from its states; its accuracy on
   the held-out phrasings goes in the log.
5. **Denoiser**, on the frozen text encoder: v-prediction on DDPM's linear schedule rescaled to
   zero terminal SNR (see ``SCHEDULE``), half of the timesteps from the noisier part of the
   schedule, the loss weighted up on the shape, 10 % of captions dropped (so classifier-free
   guidance works), a new phrasing of each caption every time it is drawn, an exponential
   moving average of the weights (saved). bf16 matrix products where the device has them.
6. **Save** in fp16 (sdkit loads them as float32 on CPUs), with ``training_log.json`` (the
   settings, the loss curve, the time per phase) and the model card.

    python tools/train_default_model.py [--out sdkit/default_model] [--quick]

``--quick`` trains a few steps (a smoke test, under a minute). Uses the GPU when
one is present (``--device``); the weights then differ from a CPU run in the last bits.

A continuation starts from a trained folder instead of from scratch: ``--init-from DIR``
takes DIR's UNet and frozen text encoder (no text phase) and trains the denoiser further on
latents scaled as DIR's were, e.g. with ``--small-radius``, ``--outline-weight`` (the loss
weighted up along the shape's outline) or ``--band LO HI`` (the timesteps that ``--high-noise``
draws). Its log keeps DIR's under ``"base"``.

The shipped model was made in two runs (its model card has the numbers):

    python tools/train_default_model.py --small-radius 0.085 --out /tmp/base
    python tools/train_default_model.py --init-from /tmp/base --unet-steps 2500 --lr 3e-4

The first (6,000 steps, small shapes drawn at 0.085 of the side) took 76 minutes on 2 cores
with avx512_bf16; the second (small shapes at 0.11, where the model learned to tell them
apart) 75 minutes on 2 AMD EPYC cores without AVX-512 (fp32). An earlier continuation,
1,000 steps of ``--outline-weight 16 --band 150 750 --high-noise 0.7 --lr 2e-4``, left shape
accuracy where it was (40 % against 42 % on 40 held-out prompts).

One run that fits 90 minutes on 2 cores without AVX-512, ``--batch 16 --unet-steps 5000``
(80 minutes, fp32), read 54 % of held-out shapes against the shipped 87.5 %: too few samples.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from shapes import (  # noqa: E402
    COLOURS,
    HELDOUT_TEMPLATES,
    POSITIONS,
    SHAPES,
    SIZE,
    SIZE_WORDS,
    SIZES,
    TRAIN_TEMPLATES,
    caption,
    random_scene,
    render,
)
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from sdkit._clip_vocab import clip_tokenizer  # noqa: E402

# DDPM's linear betas, rescaled to zero terminal SNR, with v-prediction (Lin et al., "Common
# Diffusion Noise Schedules and Sample Steps are Flawed", 2024). With SD's scaled-linear
# schedule the noisiest latent still shows the picture's mean colour (averaged over 32 x 32
# latent pixels, SNR 0.0047 becomes ~5): the model learned to read the background from the
# noise and ignored the caption, and at sampling time pure noise gave random muddy colours.
SCHEDULE = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "steps_offset": 1,  # unused by trailing spacing; StableDiffusionPipeline warns without it
    "prediction_type": "v_prediction",
}
# r, g, b block means and a fourth channel, their mean: redundant, but four channels are what
# diffusers' inpainting pipeline accepts for a text-to-image UNet (it blends latents under the
# mask); with three, inpainting with the default model failed inside diffusers
LATENT_CHANNELS = 4
# What Generator() uses when a call does not say (sdkit.json in the folder): the shipped model
# follows prompts better at a low guidance scale than at sdkit's general default, 7.
GENERATION_DEFAULTS = {"steps": 25, "guidance_scale": 3.0}
# The saved scheduler samples with Karras sigmas (what sdkit's sampler="Euler",
# schedule="karras" sets), the noise levels still running up to pure noise. Same 60 held-out
# prompts, 25 steps: Euler Karras at CFG 3 read 57 % of shapes and 97 % of colours; at CFG 2,
# 4 and 5: 47, 52 and 45 % of shapes; trailing Euler at CFG 4: 47 %; DPM++ 2M Karras 42 %,
# DDIM 47 %, UniPC 43 %, Euler a 53 % (all at CFG 4).
SAMPLING = {"use_karras_sigmas": True, "timestep_spacing": "linspace"}
TEXT_HIDDEN = 64


# The autoencoder is analytic, not trained: its encoder averages 8 x 8 pixel blocks and its
# decoder repeats each latent pixel over an 8 x 8 block. Both are built from AutoencoderKL's own
# layers, so the folder is an ordinary SD VAE. GroupNorm and SiLU sit on the main path of
# AutoencoderKL; two constant channels (+K, -K) fix GroupNorm's statistics, and an offset keeps
# SiLU in its linear range, so the whole network is linear to within 2e-4.
VAE_WIDTH = 8  # channels inside: r g b, -r -g -b, +K, -K
VAE_CONSTANT = 100.0
VAE_OFFSET = 20.0  # SiLU(x + 20) = x + 20 to within 1e-7 for |x| < 3
VAE_FACTOR = 8


def build_vae() -> AutoencoderKL:
    """An ``AutoencoderKL`` (8x spatial factor, 4 latent channels) with analytic weights."""
    vae = AutoencoderKL(
        block_out_channels=(VAE_WIDTH,) * 4,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=1,
        mid_block_add_attention=False,
        sample_size=SIZE,
    )
    set_vae_weights(vae)
    return vae.eval()


@torch.no_grad()
def set_vae_weights(vae: AutoencoderKL) -> None:
    for parameter in vae.parameters():
        parameter.zero_()

    def centre(conv: torch.nn.Conv2d, taps: dict[int, list[tuple[int, float]]]) -> None:
        for out, ins in taps.items():
            for channel, weight in ins:
                conv.weight[out, channel, 1, 1] = weight

    spread = {c: [(c, 1.0)] for c in range(3)} | {c + 3: [(c, -1.0)] for c in range(3)}
    gather = {c: [(c, 0.5), (c + 3, -0.5)] for c in range(3)}  # (x + B - (-x + B)) / 2
    mean = {3: [(c, 1 / 6) for c in range(3)] + [(c + 3, -1 / 6) for c in range(3)]}
    sigma = (2 * VAE_CONSTANT**2 / VAE_WIDTH) ** 0.5  # GroupNorm's std, the constants dominate
    for coder in (vae.encoder, vae.decoder):
        centre(coder.conv_in, spread)
        coder.conv_in.bias[6], coder.conv_in.bias[7] = VAE_CONSTANT, -VAE_CONSTANT
        for module in coder.modules():  # residual branches stay zero: their conv2 is zero
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.fill_(1.0)
        coder.conv_norm_out.weight.zero_()
        coder.conv_norm_out.weight[:6] = sigma
        coder.conv_norm_out.bias[:6] = VAE_OFFSET
        centre(coder.conv_out, gather)
    centre(vae.encoder.conv_out, mean)  # the encoder's fourth channel; the decoder ignores it
    for block in vae.encoder.down_blocks:  # 2 x 2 average (stride 2, no padded tap used)
        for down in block.downsamplers or []:
            for c in range(VAE_WIDTH):
                down.conv.weight[c, c, :2, :2] = 0.25
    for up_block in vae.decoder.up_blocks:  # nearest upsampling, then the identity
        for up in up_block.upsamplers or []:
            centre(up.conv, {c: [(c, 1.0)] for c in range(VAE_WIDTH)})
    vae.encoder.conv_out.bias[LATENT_CHANNELS:] = -30.0  # log-variance: a deterministic encoder
    for c in range(2 * LATENT_CHANNELS):
        vae.quant_conv.weight[c, c, 0, 0] = 1.0
    for c in range(LATENT_CHANNELS):
        vae.post_quant_conv.weight[c, c, 0, 0] = 1.0


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=SIZE // VAE_FACTOR,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=1,
        # cross-attention at 8 x 8 and 4 x 4 only: at 32 x 32 and 16 x 16 it costs more than
        # it gives for one shape per picture
        down_block_types=(
            "DownBlock2D",
            "DownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
        ),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=16,
        # The caption also reaches every ResNet block through the time embedding (attention
        # pooling of the text states, added to it): a global path that cross-attention alone
        # did not open (trained with cross-attention only, the UNet ignored the text)
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        resnet_time_scale_shift="scale_shift",
    )


def build_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=TEXT_HIDDEN,
            intermediate_size=4 * TEXT_HIDDEN,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=TEXT_HIDDEN,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def to_uint8(images: list[Any]) -> torch.Tensor:
    """(N, 3, H, W) uint8: 4x smaller than floats (12,000 images: 2.4 GB)."""
    return torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images])).permute(
        0, 3, 1, 2
    )


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


def block_means(pixels: torch.Tensor) -> torch.Tensor:
    """What the analytic encoder computes: 8 x 8 block means of r, g, b, and their mean."""
    rgb = F.avg_pool2d(pixels, VAE_FACTOR)
    return torch.cat([rgb, rgb.mean(dim=1, keepdim=True)], dim=1)


@torch.no_grad()
def encode(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    means = [
        vae.encode(to_float(images[i : i + batch])).latent_dist.mean
        for i in range(0, len(images), batch)
    ]
    return torch.cat(means)


def foreground_weights(latents: torch.Tensor, extra: float, outline: float = 0.0) -> torch.Tensor:
    """(N, H, W) loss weights: 1 on the background, 1 + ``extra`` on the shape, and
    ``outline`` more on the latent pixels next to its edge, inside and outside.

    The shape covers 2-7 % of a picture; with a plain mean the background's colour dominates
    the loss and the model learned it long before the shape's colour, kind or place. The
    background of each latent is its border's median; the shape is what differs from it.

    What tells a star from a circle of the same size is a ring of a few latent pixels along
    the outline, half of it outside the shape, where ``extra`` alone weighs a round blob's
    spill-over as background: ``outline`` weighs the whole ring (the shape dilated minus the
    shape eroded, by one latent pixel).
    """
    border = torch.cat(
        [latents[:, :, 0], latents[:, :, -1], latents[:, :, :, 0], latents[:, :, :, -1]], dim=2
    )
    background = border.median(dim=2).values[:, :, None, None]
    shape = ((latents - background).abs().amax(dim=1) > 0.25).float()
    weights = 1.0 + extra * shape
    if outline:
        grown = F.max_pool2d(shape[:, None], 3, stride=1, padding=1)
        shrunk = -F.max_pool2d(-shape[:, None], 3, stride=1, padding=1)
        weights = weights + outline * (grown - shrunk)[:, 0]
    return weights


# What the text encoder learns to read from a caption before the denoiser sees it.
ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "background": tuple(COLOURS),
    "position": tuple(POSITIONS),
    "size": ("unsaid", *SIZE_WORDS),
}


# Lead-in words for the parsing phase only. Trained on the templates alone, the encoder read
# colours by their absolute place in the caption: "Top left, a red circle on a blue background"
# (a training phrasing with its position moved to the front) swapped the colours one time in five.
LEAD_INS = ("", "", "", "a picture: ", "an image of ", "here is ", "simple drawing, ", "flat art: ")


def _attribute_labels(scenes: list[Any], texts: list[str]) -> dict[str, torch.Tensor]:
    labels: dict[str, list[int]] = {name: [] for name in ATTRIBUTE_CLASSES}
    for scene, text in zip(scenes, texts, strict=True):
        said = any(word in text.split() for word in SIZE_WORDS[scene.size])
        values = scene.to_dict() | {"size": scene.size if said else "unsaid"}
        for name, classes in ATTRIBUTE_CLASSES.items():
            labels[name].append(classes.index(values[name]))
    return {name: torch.tensor(v) for name, v in labels.items()}


def _pooled(states: torch.Tensor, ids: torch.Tensor, eos: int) -> list[torch.Tensor]:
    """The end-of-text token's state and the mean of all states: both must name every attribute."""
    end = (ids == eos).int().argmax(dim=1)
    return [states[torch.arange(len(ids)), end], states.mean(dim=1)]


def pretrain_text_encoder(
    text_encoder: CLIPTextModel,
    tokenizer: Any,
    args: argparse.Namespace,
    log: list[Any],
) -> dict[str, float]:
    """Teach the text encoder to parse captions (shape, colours, position, size) before diffusion.

    SD's denoiser learns on top of a pretrained CLIP text encoder. Ours has no pretrained
    weights, and trained jointly from scratch with the denoiser it learned only what the
    pooled caption gave cheaply (the two colours): position and shape stayed at chance (the
    previous run: 9.5 % and 16.5 %). So the encoder first learns to name every attribute of a
    caption, from its end-of-text state and from the mean of its states (what the UNet's
    attention pooling sees), with linear heads that are thrown away afterwards. Captions come
    from the training templates and training scenes only; the returned accuracy is measured on
    the held-out phrasings, which the encoder has not seen.
    """
    eos = int(tokenizer.eos_token_id)
    heads = torch.nn.ModuleDict(
        {
            f"{name}{k}": torch.nn.Linear(TEXT_HIDDEN, len(classes))
            for name, classes in ATTRIBUTE_CLASSES.items()
            for k in range(2)
        }
    )
    params = list(text_encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.text_lr, weight_decay=0.01)
    rng = random.Random(args.seed + 11)
    warmup = max(1, args.text_steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.text_steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    def batch(
        count: int, templates: Any, heldout: bool | None, lead: bool = False
    ) -> tuple[torch.Tensor, Any]:
        scenes = [random_scene(rng, heldout=heldout) for _ in range(count)]
        texts = [caption(scene, rng, templates) for scene in scenes]
        if lead:  # words shifted by 0-5 places: the parse must not hang on absolute places
            texts = [rng.choice(LEAD_INS) + text for text in texts]
        ids = tokenizer(
            texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        return ids, _attribute_labels(scenes, texts)

    text_encoder.train()
    started = time.perf_counter()
    for step in range(args.text_steps):
        ids, labels = batch(args.text_batch, TRAIN_TEMPLATES, False, lead=True)
        pooled = _pooled(text_encoder(ids)[0], ids, eos)
        loss = sum(
            F.cross_entropy(heads[f"{name}{k}"](pooled[k]), labels[name])
            for name in ATTRIBUTE_CLASSES
            for k in range(2)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.text_steps - 1:
            elapsed = time.perf_counter() - started
            log.append({"phase": "text", "step": step, "loss": round(float(loss.detach()), 5)})
            print(
                f"text {step:5d}/{args.text_steps} loss {loss.item():.4f} {elapsed:.0f}s",
                flush=True,
            )
    text_encoder.eval()

    def accuracy_on(templates: Any, count: int) -> dict[str, float]:
        with torch.no_grad():
            ids, labels = batch(count, templates, None)
            pooled = _pooled(text_encoder(ids)[0], ids, eos)
        return {
            name: round(
                float((heads[f"{name}0"](pooled[0]).argmax(1) == labels[name]).float().mean()), 4
            )
            for name in ATTRIBUTE_CLASSES
        }

    for template in HELDOUT_TEMPLATES:
        print(f"  {template!r}: {accuracy_on((template,), 300)}", flush=True)
    accuracy = accuracy_on(HELDOUT_TEMPLATES, 1000)  # held-out phrasings, any scene
    log.append({"phase": "text", "heldout_accuracy": accuracy})
    print(f"text encoder, held-out phrasings: {accuracy}", flush=True)
    return accuracy


def sample_timesteps(
    count: int, high_noise: float, gen: torch.Generator, band: tuple[int, int] = (400, 1000)
) -> torch.Tensor:
    """Training timesteps: a fraction ``high_noise`` from ``band``, the rest from [0, 1000).

    Where the shape goes gets decided in the noisier half of the schedule (at t = 400 a latent
    pixel's SNR is 0.2, at 700 it is 0.007); uniform timesteps spent most of the training on
    quieter ones. ``band`` lets a polishing run aim elsewhere: 150-750 was tried, where the
    shipped model's predictions of a noised picture were still round blobs (it did not help).
    """
    uniform = torch.randint(0, 1000, (count,), generator=gen)
    high = torch.randint(band[0], band[1], (count,), generator=gen)
    pick = torch.rand(count, generator=gen) < high_noise
    return torch.where(pick, high, uniform)


def train_denoiser(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: Any,
    latents: torch.Tensor,
    scenes: list[Any],
    args: argparse.Namespace,
    log: list[Any],
    snapshot: Any = None,
) -> UNet2DConditionModel:
    """Train ``unet`` on the frozen ``text_encoder``'s states; returns its moving average."""
    noise_schedule = DDPMScheduler.from_config(SCHEDULE)
    fresh = 100 if args.init_from else 0  # a polishing run draws other batches than its base
    gen = torch.Generator().manual_seed(2 + fresh)
    words = random.Random(3 + fresh)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    warmup = min(200, args.unet_steps // 10 + 1)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.unet_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    unet.train()
    device = latents.device
    # bf16 matrix products where the CPU has them (avx512_bf16: 17 % faster here); weights,
    # optimizer and loss stay fp32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    started = time.perf_counter()
    for step in range(args.unet_steps):
        index = torch.randint(0, len(latents), (args.batch,), generator=gen)
        texts = [
            "" if words.random() < args.caption_dropout else caption(scenes[i], words)
            for i in index.tolist()
        ]
        ids = tokenizer(
            texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        x0 = latents[index.to(device)]
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = sample_timesteps(args.batch, args.high_noise, gen, tuple(args.band)).to(device)
        noisy = noise_schedule.add_noise(x0, noise, t)
        with torch.no_grad():
            context = text_encoder(ids)[0]
        with autocast:
            prediction = unet(noisy, t, context).sample.float()
        # v-prediction, unweighted (as SD 2.x): at zero SNR an epsilon target is meaningless
        target = noise_schedule.get_velocity(x0, noise, t)
        per_pixel = (prediction - target).pow(2).mean(dim=1)
        weights = foreground_weights(x0, args.foreground_weight, args.outline_weight)
        loss = (per_pixel * weights).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(ema_unet.parameters()), params, 1 - decay)
        if step % 50 == 0 or step == args.unet_steps - 1:
            elapsed = time.perf_counter() - started
            log.append(
                {
                    "phase": "denoiser",
                    "step": step,
                    "loss": round(loss.item(), 5),
                    "s": round(elapsed),
                }
            )
            print(
                f"denoiser {step:6d}/{args.unet_steps} loss {loss.item():.4f} "
                f"lr {sched.get_last_lr()[0]:.2e} {elapsed:.0f}s",
                flush=True,
            )
        if snapshot is not None and args.snapshot_every and (step + 1) % args.snapshot_every == 0:
            snapshot(ema_unet, text_encoder, step + 1)
    return ema_unet


def base_log(folder: Path) -> dict[str, Any]:
    """The training log of an earlier run, which ``--init-from`` continues."""
    log_file = folder / "training_log.json"
    if not log_file.is_file():
        raise SystemExit(f"{folder} has no training_log.json: not a folder this script wrote")
    return dict(json.loads(log_file.read_text()))


def load_base(folder: Path) -> tuple[CLIPTextModel, UNet2DConditionModel]:
    """The text encoder and UNet of an earlier run, in float32."""
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    return text_encoder.eval(), unet


def _edit_config(path: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    """Apply ``edit`` to the JSON config at ``path`` (written back as save_pretrained writes)."""
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _load_as_float32(config: dict[str, Any]) -> None:
    """Name float32 as a transformers config's dtype (``torch_dtype`` before transformers 4.56)."""
    config["dtype"] = "float32"
    if "torch_dtype" in config:
        config["torch_dtype"] = "float32"


def save_pipeline(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: Any,
    out: Path,
) -> None:
    """Save an SD pipeline folder with fp16 copies of the weights (the originals are kept)."""
    halves = [copy.deepcopy(m).to("cpu", torch.float16) for m in (unet, vae, text_encoder)]
    pipe = StableDiffusionPipeline(
        unet=halves[0],
        vae=halves[1],
        text_encoder=halves[2],
        tokenizer=tokenizer,
        scheduler=EulerDiscreteScheduler.from_config({**SCHEDULE, **SAMPLING}),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    # a continuation's UNet names its base's folder
    _edit_config(out / "unet" / "config.json", lambda c: c.pop("_name_or_path", None))
    # transformers 5 loads a model in the dtype its config names unless told otherwise, and
    # diffusers loads its own models as float32: plain StableDiffusionPipeline.from_pretrained
    # would pair an fp16 text encoder with an fp32 UNet ("mat1 and mat2 must have the same
    # dtype"). The weights stay fp16 on disk (half the size); the config asks for float32.
    _edit_config(out / "text_encoder" / "config.json", _load_as_float32)
    (out / "sdkit.json").write_text(json.dumps({"defaults": GENERATION_DEFAULTS}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sdkit" / "default_model")
    parser.add_argument("--images", type=int, default=32000)
    parser.add_argument("--text-steps", type=int, default=600)
    parser.add_argument("--text-batch", type=int, default=128)
    parser.add_argument("--text-lr", type=float, default=2e-3)
    parser.add_argument("--unet-steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument(
        "--foreground-weight", type=float, default=8.0, help="extra loss weight on the shape"
    )
    parser.add_argument(
        "--high-noise",
        type=float,
        default=0.5,
        help="fraction of training timesteps drawn from the noisier 60 %% of the schedule",
    )
    parser.add_argument(
        "--band",
        type=int,
        nargs=2,
        default=(400, 1000),
        metavar=("LO", "HI"),
        help="the timesteps that --high-noise draws from (default: 400 1000)",
    )
    parser.add_argument(
        "--outline-weight",
        type=float,
        default=0.0,
        help="extra loss weight on the ring of latent pixels along the shape's outline",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="polish: start the denoiser from this model folder's UNet, on its frozen text "
        "encoder (no text phase); its training log is kept under 'base'",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=None,
        help="the denoiser's matrix products (default: bf16 where the device has it)",
    )
    parser.add_argument(
        "--small-radius",
        type=float,
        default=SIZES["small"],
        help="radius of a small shape, as a fraction of the side (default: %(default)s; the "
        "shipped model's base run drew them at 0.085)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--quick", action="store_true", help="a few steps of each phase")
    parser.add_argument(
        "--snapshots", type=Path, default=None, help="save the EMA model here every N steps"
    )
    parser.add_argument("--snapshot-every", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.images, args.text_steps, args.unet_steps = 256, 20, 30
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.precision is None:
        bf16 = (
            torch.cuda.is_bf16_supported()
            if device.type == "cuda"
            else torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
        args.precision = "bf16" if bf16 else "fp32"
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    times: dict[str, float] = {}
    log: list[dict[str, Any]] = []
    clock = time.perf_counter()

    # a continuation's base, read first: a wrong --init-from fails before the data are made
    base = base_log(args.init_from) if args.init_from is not None else None

    # 1. Data: rendered at 256 px, kept only as 32 x 32 block means (the latents)
    rng = random.Random(args.seed)
    radii = {**SIZES, "small": args.small_radius}
    scenes = [random_scene(rng, heldout=False) for _ in range(args.images)]
    chunks = []
    for first in range(0, len(scenes), 512):
        pixels = to_uint8(
            [render(scene, rng, radii=radii) for scene in scenes[first : first + 512]]
        )
        chunks.append(block_means(to_float(pixels)))
    latents = torch.cat(chunks)
    times["data_s"] = time.perf_counter() - clock
    print(f"rendered {len(scenes)} images in {times['data_s']:.0f}s", flush=True)

    # 2. Autoencoder (analytic): check that it is the block mean, 3. scale the latents
    vae = build_vae()
    check = [render(scene, random.Random(i), radii=radii) for i, scene in enumerate(scenes[:16])]
    pixels = to_float(to_uint8(check))
    error = float((encode(vae, to_uint8(check)) - block_means(pixels)).abs().max())
    if error > 1e-3:
        raise SystemExit(f"the analytic autoencoder is off by {error}")
    scale = float(1.0 / latents.std())
    log.append({"phase": "data", "scaling_factor": scale, "radii": radii})
    if base is not None:
        # a continuation keeps its base's latent scale, which its UNet learned on, even where
        # the data differ (e.g. another --small-radius)
        scale = base["vae_scaling_factor"]
    vae.register_to_config(scaling_factor=scale)
    latents = (latents * scale).to(device)
    log.append({"phase": "autoencoder", "max_error": error, "scaling_factor": scale})
    print(f"latents {tuple(latents.shape)}, scaling factor {scale:.4f}", flush=True)

    # 4. The text encoder learns to parse captions, then the denoiser learns on top of it
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = clip_tokenizer(Path(tmp) / "tok")

        def snapshot(unet: Any, text_encoder: Any, step: int) -> None:
            if args.snapshots is not None:
                save_pipeline(unet, vae, text_encoder, tokenizer, args.snapshots / f"step{step}")

        clock = time.perf_counter()
        if base is None:
            text_encoder = build_text_encoder()
            parsing = pretrain_text_encoder(text_encoder, tokenizer, args, log)
            first_unet = build_unet()
        else:
            text_encoder, first_unet = load_base(args.init_from)
            parsing = base["text_encoder_heldout_accuracy"]
        times["text_s"] = time.perf_counter() - clock
        text_encoder.to(device)
        clock = time.perf_counter()
        unet = train_denoiser(
            first_unet.to(device),
            text_encoder,
            tokenizer,
            latents,
            scenes,
            args,
            log,
            snapshot,
        )
        times["denoiser_s"] = time.perf_counter() - clock

        # 5. Save (fp16 weights), the log and the model card
        staging = Path(tmp) / "model"
        save_pipeline(unet, vae, text_encoder, tokenizer, staging)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        summary = {
            "settings": settings,
            "times_s": {k: round(v, 1) for k, v in times.items()},
            "total_s": round(sum(times.values()), 1),
            "vae_scaling_factor": scale,
            "text_encoder_heldout_accuracy": parsing,
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "device": str(device),
            },
            "log": log,
        }
        if base is not None:
            summary["base"] = base
            summary["total_s"] = round(summary["total_s"] + base["total_s"], 1)
        (staging / "training_log.json").write_text(json.dumps(summary, indent=1))
        card = ROOT / "tools" / "default_model_card.md"
        if card.exists():
            shutil.copy(card, staging / "README.md")
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(staging, args.out)
    print(f"wrote {args.out} in {summary['total_s']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
