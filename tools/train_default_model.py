"""Train sdkit's default model: a small latent diffusion model of coloured shapes.

The result is an ordinary Stable Diffusion pipeline folder (``model_index.json``, ``unet``,
``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``) that ``Generator.from_pretrained``
loads like any SD 1.x checkpoint: ``StableDiffusionPipeline``, ``AutoencoderKL``,
``UNet2DConditionModel``, ``CLIPTextModel`` with the real CLIP BPE tokenizer.

Phases (all seeded; the same command gives the same weights on the same machine and library
versions):

1. **Data**: ``--images`` scenes from ``tools/shapes.py`` (shape, colour, background,
   position, size), rendered at 256 px; held-out shape/colour pairs are never drawn.
2. **Autoencoder**: an ``AutoencoderKL`` with five levels (16x spatial factor, 8 latent
   channels: a 256 px image is a 16 x 16 latent), trained on random crops with an L1 loss and a
   small KL term.
3. **Latents**: every image encoded once; the scaling factor makes them unit variance, as SD's
   0.18215 does for its VAE.
4. **Denoiser and text encoder**, trained together from scratch: epsilon prediction on SD's
   scaled-linear schedule, min-SNR weighting (gamma 5, Hang et al. 2023), 10 % of captions
   dropped (so classifier-free guidance works), a new phrasing of each caption every time it
   is drawn, an exponential moving average of the weights (saved).
5. **Save** in fp16 (sdkit loads them as float32 on CPUs), with ``training_log.json`` (the
   settings, the loss curve, the time per phase) and the model card.

    python tools/train_default_model.py [--out sdkit/default_model] [--quick]

``--quick`` trains a few steps of each phase (a smoke test, about a minute). Uses the GPU when
one is present (``--device``); the weights then differ from a CPU run in the last bits.
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
from shapes import SIZE, caption, random_scene, render  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from sdkit._clip_vocab import clip_tokenizer  # noqa: E402

SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
LATENT_CHANNELS = 8
TEXT_HIDDEN = 64


def build_vae(widths: tuple[int, ...] = (8, 16, 32, 64, 64), groups: int = 4) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=widths,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 5,
        up_block_types=("UpDecoderBlock2D",) * 5,
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=groups,  # few groups: flat colours survive the normalisation
        sample_size=SIZE,
    )


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=SIZE // 16,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
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


def train_vae(
    vae: AutoencoderKL, images: torch.Tensor, steps: int, batch: int, crop: int, log: list[Any]
) -> None:
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=max(steps, 2))
    vae.train()
    for step in range(steps):
        index = torch.randint(0, len(images), (batch,), generator=gen)
        y, x = torch.randint(0, SIZE - crop + 1, (2,), generator=gen).tolist()
        x0 = to_float(images[index.to(images.device), :, y : y + crop, x : x + crop])
        posterior = vae.encode(x0).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=gen).to(x0.device)
        z = posterior.mean + posterior.std * eps
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x0) + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log.append({"phase": "vae", "step": step, "loss": round(float(loss), 5)})
            print(f"vae {step:5d}/{steps} loss {float(loss):.4f}", flush=True)
    vae.eval()


@torch.no_grad()
def encode(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    means = [
        vae.encode(to_float(images[i : i + batch])).latent_dist.mean
        for i in range(0, len(images), batch)
    ]
    return torch.cat(means)


def train_denoiser(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: Any,
    latents: torch.Tensor,
    scenes: list[Any],
    args: argparse.Namespace,
    log: list[Any],
    snapshot: Any = None,
) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    noise_schedule = DDPMScheduler.from_config(SCHEDULE)
    alphas = noise_schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    gen = torch.Generator().manual_seed(2)
    words = random.Random(3)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    warmup = min(200, args.unet_steps // 10 + 1)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.unet_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for model in (ema_unet, ema_text):
        model.requires_grad_(False)
    unet.train()
    text_encoder.train()
    started = time.perf_counter()
    for step in range(args.unet_steps):
        index = torch.randint(0, len(latents), (args.batch,), generator=gen)
        texts = [
            "" if words.random() < args.caption_dropout else caption(scenes[i], words)
            for i in index.tolist()
        ]
        ids = tokenizer(
            texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids.to(latents.device)
        x0 = latents[index.to(latents.device)]
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        t = torch.randint(0, 1000, (args.batch,), generator=gen).to(x0.device)
        noisy = noise_schedule.add_noise(x0, noise, t)
        context = text_encoder(ids)[0]
        prediction = unet(noisy, t, context).sample
        # min-SNR-gamma weighting for epsilon prediction: min(SNR, gamma) / SNR
        weight = (torch.clamp(snr[t.cpu()], max=5.0) / snr[t.cpu()]).to(x0.device)
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (weight * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                for e, p in zip(ema.parameters(), live.parameters(), strict=True):
                    e.lerp_(p, 1 - decay)
        if step % 50 == 0 or step == args.unet_steps - 1:
            elapsed = time.perf_counter() - started
            log.append(
                {
                    "phase": "denoiser",
                    "step": step,
                    "loss": round(float(loss), 5),
                    "s": round(elapsed),
                }
            )
            print(
                f"denoiser {step:6d}/{args.unet_steps} loss {float(loss):.4f} "
                f"lr {sched.get_last_lr()[0]:.2e} {elapsed:.0f}s",
                flush=True,
            )
        if snapshot is not None and args.snapshot_every and (step + 1) % args.snapshot_every == 0:
            snapshot(ema_unet, ema_text, step + 1)
    return ema_unet, ema_text


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
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sdkit" / "default_model")
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-crop", type=int, default=96)
    parser.add_argument("--unet-steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--quick", action="store_true", help="a few steps of each phase")
    parser.add_argument(
        "--snapshots", type=Path, default=None, help="save the EMA model here every N steps"
    )
    parser.add_argument("--snapshot-every", type=int, default=0)
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the autoencoder and latents here and reuse them when the settings match",
    )
    args = parser.parse_args()
    if args.quick:
        args.images, args.vae_steps, args.unet_steps = 256, 20, 30
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    times: dict[str, float] = {}
    log: list[dict[str, Any]] = []
    clock = time.perf_counter()

    # 1. Data
    rng = random.Random(args.seed)
    scenes = [random_scene(rng, heldout=False) for _ in range(args.images)]
    images = to_uint8([render(scene, rng) for scene in scenes]).to(device)
    times["data_s"] = time.perf_counter() - clock
    print(f"rendered {len(scenes)} images in {times['data_s']:.0f}s", flush=True)

    # 2. Autoencoder, 3. latents (cached in --work when given: same settings, same result)
    key = f"{args.seed}-{args.images}-{args.vae_steps}-{args.vae_batch}-{args.vae_crop}"
    cache = args.work / f"autoencoder-{key}.pt" if args.work is not None else None
    vae = build_vae().to(device)
    if cache is not None and cache.exists():
        saved = torch.load(cache, map_location=device)
        vae.load_state_dict(saved["vae"])
        vae.register_to_config(scaling_factor=saved["scale"])
        latents, scale = saved["latents"], saved["scale"]
        log.extend(saved["log"])
        times.update(saved["times"])
        print(f"reused the autoencoder and latents from {cache}", flush=True)
    else:
        clock = time.perf_counter()
        train_vae(vae, images, args.vae_steps, args.vae_batch, args.vae_crop, log)
        times["vae_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        latents = encode(vae, images)
        scale = float(1.0 / latents.std())
        vae.register_to_config(scaling_factor=scale)
        latents = latents * scale
        times["encode_s"] = time.perf_counter() - clock
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            state = {"vae": vae.state_dict(), "latents": latents, "scale": scale}
            torch.save({**state, "log": list(log), "times": dict(times)}, cache)
    del images
    print(f"latents {tuple(latents.shape)}, scaling factor {scale:.4f}", flush=True)

    # 4. Denoiser + text encoder
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = clip_tokenizer(Path(tmp) / "tok")

        def snapshot(unet: Any, text_encoder: Any, step: int) -> None:
            if args.snapshots is not None:
                save_pipeline(unet, vae, text_encoder, tokenizer, args.snapshots / f"step{step}")

        unet, text_encoder = train_denoiser(
            build_unet().to(device),
            build_text_encoder().to(device),
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
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "device": str(device),
            },
            "log": log,
        }
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
