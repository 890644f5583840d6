"""The sampler names users know, mapped to diffusers schedulers.

:data:`SAMPLERS` maps AUTOMATIC1111's display names ("DPM++ 2M") and ComfyUI's sampler ids
("dpmpp_2m") to a diffusers scheduler class plus the config that makes it that sampler
(``table.py``, one cited row per sampler). :data:`SCHEDULES` maps schedule types ("karras",
"trailing") to config overrides (``schedules.py``). ``resolve.py`` turns a name and a schedule
into a scheduler, gives each sampler A1111's "Automatic" schedule when none is named, and
names what ran in A1111's words for infotext.

Example:
    >>> resolve_sampler("DPM++ 2M").schedule, resolve_sampler("DPM++ 2M SDE").schedule
    ('karras', 'exponential')
"""

from .resolve import (
    ResolvedSampler,
    a1111_names,
    check_steps,
    fresh_scheduler,
    make_scheduler,
    read_a1111_names,
    replay_sampler,
    resolve_sampler,
    sampler_names,
)
from .schedules import A1111_LABELS, REFUSED_SCHEDULES, SCHEDULES
from .table import REFUSED, SAMPLERS, SamplerSpec

__all__ = [
    "A1111_LABELS",
    "REFUSED",
    "REFUSED_SCHEDULES",
    "SAMPLERS",
    "SCHEDULES",
    "ResolvedSampler",
    "SamplerSpec",
    "a1111_names",
    "check_steps",
    "fresh_scheduler",
    "make_scheduler",
    "read_a1111_names",
    "replay_sampler",
    "resolve_sampler",
    "sampler_names",
]
