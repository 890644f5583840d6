"""Resolve a sampler name and a schedule into a diffusers scheduler; name what ran for A1111.

Names match case-insensitively and ignore spaces, ``_`` and ``-`` (and ``++`` reads as ``pp``),
so "dpm++ 2m", "DPM++_2M" and "dpmpp_2m" are one sampler. A1111's legacy names with a schedule
suffix ("DPM++ 2M Karras", "DPM++ 2M SDE Exponential", ``k_dpmpp_2m_ka``) resolve to sampler +
schedule. With no schedule named, a sampler gets its *automatic* schedule (A1111's
"Automatic"); ``"default"`` keeps the model's own spacing and sigmas.

Example:
    >>> resolved = resolve_sampler("DPM++ 2M Karras")
    >>> resolved.spec.name, resolved.schedule, resolved.config["use_karras_sigmas"]
    ('DPM++ 2M', 'karras', True)
    >>> resolve_sampler("DPM++ 2M").schedule  # A1111's Automatic for DPM++ 2M
    'karras'
    >>> scheduler = make_scheduler("euler_ancestral", {"prediction_type": "v_prediction"})
    >>> type(scheduler).__name__, scheduler.config.prediction_type
    ('EulerAncestralDiscreteScheduler', 'v_prediction')
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from diffusers import EulerDiscreteScheduler, SchedulerMixin

from sdkit.errors import InvalidOptionError

from .discard import DISCARDING
from .k_samplers import ExplicitSigmasEulerScheduler, KDiffusionScheduler
from .schedules import (
    A1111_LABELS,
    REFUSED_SCHEDULES,
    SCHEDULE_ALIASES,
    SCHEDULES,
    SIGMA_FLAGS,
    SUFFIX_ALIASES,
)
from .sigmas import EXPLICIT_SCHEDULES
from .table import NEEDS, REFUSED, SAMPLERS, SamplerSpec

__all__ = [
    "ResolvedSampler",
    "a1111_names",
    "check_steps",
    "fresh_scheduler",
    "make_scheduler",
    "read_a1111_names",
    "replay_sampler",
    "resolve_sampler",
    "sampler_names",
]


@dataclass(frozen=True)
class ResolvedSampler:
    """A sampler with its schedule, ready to build a scheduler.

    Attributes:
        spec: the sampler's table entry.
        schedule: the effective schedule name (``"default"`` when none was asked for).
        config: every override to apply: ``spec.config`` plus the schedule's.
    """

    spec: SamplerSpec
    schedule: str
    config: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The choice as plain data, e.g. for a manifest or ``--json`` output."""
        return {
            "sampler": self.spec.name,
            "schedule": self.schedule,
            "scheduler": self.spec.scheduler_class.__name__,
            "config": dict(self.config),
        }


def _key(text: str) -> str:
    """Fold a spelling: case, spaces, ``_``/``-``, and ``++`` vs ``pp`` do not matter."""
    return re.sub(r"[\s_\-]+", "", text.strip().lower().replace("++", "pp"))


def _build_index() -> dict[str, SamplerSpec]:
    index: dict[str, SamplerSpec] = {}
    for spec in SAMPLERS.values():
        for spelling in (spec.name, *spec.aliases):
            other = index.setdefault(_key(spelling), spec)
            if other is not spec:
                raise RuntimeError(f"{spelling!r} names both {other.name!r} and {spec.name!r}")
    return index


_INDEX = _build_index()
_SCHEDULE_INDEX: Mapping[str, str] = {
    **{_key(name): name for name in SCHEDULES},
    **{_key(alias): name for alias, name in SCHEDULE_ALIASES.items()},
}


def sampler_names() -> list[str]:
    """Every accepted spelling: the canonical names in display order, then the aliases.

    Any of them may also end in a schedule name, A1111's legacy style ("DPM++ 2M Karras").
    """
    names = list(SAMPLERS)
    for spec in SAMPLERS.values():
        names += [alias for alias in spec.aliases if alias not in names]
    return names


def _is_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _available(names: Iterable[str]) -> list[str]:
    """The names (samplers or schedules) whose extra package, if any, is installed."""
    return [n for n in names if n not in NEEDS or _is_installed(NEEDS[n])]


def _suggest(word: str, spellings: Iterable[str]) -> str:
    """A hint naming the spelling nearest to ``word``, compared folded."""
    folded = {_key(s): s for s in reversed(list(spellings))}  # the first spelling wins
    match = difflib.get_close_matches(_key(word), list(folded), n=1, cutoff=0.6)
    return f"did you mean {folded[match[0]]!r}?" if match else "`sdkit samplers` lists them"


_REFUSED_INDEX: Mapping[str, tuple[str, str, str]] = {
    _key(name): (name, nearest, why) for name, (nearest, why) in reversed(list(REFUSED.items()))
}  # reversed: where spellings fold together, the first (A1111's) names the error
_REFUSED_SCHEDULE_INDEX: Mapping[str, tuple[str, str, str]] = {
    _key(name): (name, nearest, why) for name, (nearest, why) in REFUSED_SCHEDULES.items()
}
_AUTOMATIC = _key("automatic")


def _refused_hint(key: str) -> str | None:
    """The hint for a sampler name sdkit knows but does not run ("DPM fast Karras" too)."""
    for candidate in (key, key.removesuffix("gpu")):
        if candidate in _REFUSED_INDEX:
            name, nearest, why = _REFUSED_INDEX[candidate]
            return f"{name} is not supported ({why}); the nearest here is {nearest!r}"
        for suffix in (*_SCHEDULE_INDEX, *map(_key, SUFFIX_ALIASES)):
            if candidate.endswith(suffix) and candidate[: -len(suffix)] in _REFUSED_INDEX:
                return _refused_hint(candidate[: -len(suffix)])
    return None


def _lookup_sampler(name: str) -> tuple[SamplerSpec, str | None]:
    """The spec, and the schedule a legacy suffix names ("DPM++ 2M Karras" -> "karras")."""
    key = _key(name) if isinstance(name, str) else ""
    if key in _INDEX:
        return _INDEX[key], None
    suffixes = {**_SCHEDULE_INDEX, **{_key(k): v for k, v in SUFFIX_ALIASES.items()}}
    for suffix, schedule in suffixes.items():
        if key.endswith(suffix) and key[: -len(suffix)] in _INDEX:
            return _INDEX[key[: -len(suffix)]], schedule
    hint = _refused_hint(key)
    if hint is None:
        legacy = [  # so that "DPM++ 2M Karas" suggests the legacy name
            f"{spec.name} {schedule.capitalize()}"
            for spec in SAMPLERS.values()
            for schedule in SIGMA_FLAGS
            if schedule in spec.schedules
        ]
        hint = _suggest(str(name), [*sampler_names(), *legacy])
    raise InvalidOptionError("sampler", name, sampler_names(), hint=hint)


def _lookup_schedule(schedule: str, spec: SamplerSpec) -> str:
    key = _key(schedule) if isinstance(schedule, str) else ""
    if key == _AUTOMATIC:
        return spec.automatic
    if key in _SCHEDULE_INDEX:
        return _SCHEDULE_INDEX[key]
    if key in _REFUSED_SCHEDULE_INDEX:
        label, nearest, why = _REFUSED_SCHEDULE_INDEX[key]
        hint = f"{label} is not supported ({why}); the nearest here is {nearest!r}"
    else:
        hint = _suggest(str(schedule), SCHEDULES)
    raise InvalidOptionError("schedule", schedule, list(SCHEDULES), hint=hint)


def _require(needer: str, option: str, value: Any, allowed: list[str]) -> None:
    package = NEEDS.get(needer)
    if package is not None and not _is_installed(package):
        hint = f"{needer} needs the {package} package: pip install {package}"
        raise InvalidOptionError(option, value, allowed, hint=hint)


def resolve_sampler(name: str, schedule: str | None = None) -> ResolvedSampler:
    """Look up a sampler and a schedule, and check that they go together.

    Args:
        name: a canonical name, an alias, or a legacy name with a schedule suffix
            ("DPM++ 2M Karras"); case, spaces, ``_`` and ``-`` do not matter.
        schedule: a key of :data:`SCHEDULES` (or an A1111 label: "Uniform", "SGM Uniform",
            "DDIM"…), ``"automatic"`` or ``None``: the name's suffix if it has one, else the
            sampler's automatic schedule (A1111's "Automatic": Karras for DPM++ 2M).

    Returns:
        The spec, the effective schedule, and the overrides for the model's scheduler config.

    Raises:
        InvalidOptionError: with ``option="sampler"`` for an unknown name, a suffix the sampler
            does not support or a sampler whose package is missing; with
            ``option="schedule"`` for an unknown schedule, one the sampler does not support,
            one that contradicts the name's suffix or one whose package is missing.

    Example:
        >>> resolve_sampler("dpmpp_2m_sde", "Exponential").config["use_exponential_sigmas"]
        True
    """
    spec, suffix = _lookup_sampler(name)
    # Errors about the schedule name the option it came from: the sampler's suffix or its own.
    effective, option, value = suffix or spec.automatic, "sampler", name
    if schedule is not None:
        wanted = _lookup_schedule(schedule, spec)
        if suffix is not None and wanted != suffix:
            hint = f"{name!r} already selects {suffix}; pass sampler={spec.name!r} to change it"
            raise InvalidOptionError("schedule", schedule, [suffix], hint=hint)
        effective, option, value = wanted, "schedule", schedule
    if effective not in spec.schedules:
        others = ", ".join(s.name for s in SAMPLERS.values() if effective in s.schedules)
        allowed = list(spec.schedules) if option == "schedule" else sampler_names()
        hint = f"{spec.name} takes {', '.join(spec.schedules)}; {effective} suits {others}"
        raise InvalidOptionError(option, value, allowed, hint=hint)
    _require(spec.name, "sampler", name, _available(SAMPLERS))
    schedules = _available(spec.schedules)
    _require(effective, option, value, schedules if option == "schedule" else sampler_names())
    accepted = inspect.signature(spec.scheduler_class).parameters
    # sdkit's own schedulers take the schedule by name, not diffusers' flags
    overrides = {
        k: v for k, v in {**spec.config, **SCHEDULES[effective][0]}.items() if k in accepted
    }
    if effective != "default":  # the chosen schedule, not the model's config, sets the sigmas
        for sigma_schedule, flag in SIGMA_FLAGS.items():
            if sigma_schedule in spec.schedules and flag in accepted:
                overrides.setdefault(flag, False)
    return ResolvedSampler(spec, effective, MappingProxyType(overrides))


def make_scheduler(
    name: str, base_config: Mapping[str, Any], schedule: str | None = None, family: str = "sd"
) -> SchedulerMixin:
    """Build the scheduler for a sampler on top of the model's scheduler config.

    The model's keys (``prediction_type``, the beta schedule, ``timestep_spacing`` unless the
    schedule sets it) carry over; keys the class does not know are ignored. The overrides go
    in as keyword arguments because ``from_config`` drops config keys that the model's config
    lists in ``_use_default_values``: merged into the dict, ``timestep_spacing="trailing"``
    would be lost on a model whose config never set it.

    Args:
        name: the sampler, as for :func:`resolve_sampler`.
        base_config: the model's ``pipe.scheduler.config``. For reproducible "DPM++ SDE" noise
            include ``noise_sampler_seed``: its Brownian tree ignores the pipeline's generator.
        schedule: the schedule, as for :func:`resolve_sampler`.
        family: the model family ("sd", "sdxl"): Align Your Steps takes SDXL's table for
            "sdxl" and SD 1.5's for any other, as A1111 does.

    Returns:
        A new scheduler, for ``pipe.scheduler = ...``.

    Raises:
        InvalidOptionError: as :func:`resolve_sampler` does.

    Example:
        >>> scheduler = make_scheduler("DDIM", {"timestep_spacing": "leading"}, "simple")
        >>> scheduler.config.timestep_spacing
        'trailing'
    """
    resolved = resolve_sampler(name, schedule)
    cls: Any = resolved.spec.scheduler_class
    explicit = resolved.schedule in EXPLICIT_SCHEDULES
    if explicit and cls is EulerDiscreteScheduler:
        cls = ExplicitSigmasEulerScheduler
    if resolved.schedule in SIGMA_FLAGS and cls in DISCARDING:  # DPM2's, as A1111's
        cls = DISCARDING[cls]
    scheduler: SchedulerMixin = cls.from_config(dict(base_config), **resolved.config)
    if cls is ExplicitSigmasEulerScheduler or issubclass(cls, KDiffusionScheduler):
        # recorded in the config, so a Recipe's scheduler_config says which sigmas ran
        scheduler.register_to_config(sigma_schedule=resolved.schedule, model_family=family)
    return scheduler


def fresh_scheduler(
    model_class: type[Any],
    model_config: Mapping[str, Any],
    resolved: ResolvedSampler | None,
    seeds: list[int],
    family: str = "sd",
) -> Any:
    """A fresh scheduler for one call: the sampler's on the model's config, else the model's own.

    Args:
        model_class: the model's own scheduler class (used when ``resolved`` is ``None``).
        model_config: the model's scheduler config.
        resolved: the sampler asked for, from :func:`resolve_sampler`, or ``None``.
        seeds: the call's seeds, one per image (DPM++ SDE seeds its noise with them).
        family: the model family, as for :func:`make_scheduler`.
    """
    base = {k: v for k, v in model_config.items() if k != "_use_default_values"}
    cls = resolved.spec.scheduler_class if resolved else model_class
    if "noise_sampler_seed" in inspect.signature(cls).parameters:
        # DPM++ SDE draws its noise from a Brownian tree, not from the pipeline's
        # generators: seed it per image so that seeds reproduce.
        base["noise_sampler_seed"] = seeds[0] if len(seeds) == 1 else list(seeds)
    if resolved is None:
        return model_class.from_config(base)
    return make_scheduler(resolved.spec.name, base, resolved.schedule, family)


def check_steps(scheduler: Any, steps: int, resolved: ResolvedSampler | None) -> None:
    """Refuse a step count the scheduler cannot schedule, before any denoising.

    diffusers' "leading" spacing with ``steps_offset=1`` (PNDM, DDIM, … with SD's own config)
    schedules timestep ``num_train_timesteps`` itself at ``steps == num_train_timesteps`` and
    then indexes past the end of its noise table; LCM and TCD refuse more steps than their
    ``original_inference_steps``. Both become an :class:`InvalidOptionError` here.
    """
    name = resolved.spec.name if resolved else type(scheduler).__name__
    limit = int(scheduler.config.get("num_train_timesteps", 1000))
    try:
        scheduler.set_timesteps(steps)
        top = float(scheduler.timesteps.max())
    except (IndexError, ValueError) as exc:
        raise InvalidOptionError(
            "steps", steps, f"a step count that {name} can schedule ({exc})",
            hint="use fewer steps or another sampler.",
        ) from exc  # fmt: skip
    if not top < limit:
        raise InvalidOptionError(
            "steps", steps, f"at most {steps - 1} with {name} and this model's scheduler config "
            f"(timestep {top:g} would be past its {limit} training timesteps)",
            hint=f"use steps={steps - 1} or another sampler (e.g. sampler='Euler').",
        )  # fmt: skip


def replay_sampler(sampler: str, schedule: str, config: Mapping[str, Any]) -> str:
    """The sampler name that rebuilds a recorded scheduler config with ``schedule``.

    A Recipe records the sampler by name. Where a name's table row has changed since (sdkit
    0.1's "UniPC" was bh2 at order 2; A1111's, now sdkit's, is bh1 at order 3), the row whose
    overrides the recorded config holds wins, so old Recipes replay to the same pixels.

    Example:
        >>> replay_sampler("UniPC", "default", {"solver_type": "bh2", "solver_order": 2})
        'UniPC bh2'
    """
    spec, _ = _lookup_sampler(sampler)

    def fits(candidate: SamplerSpec) -> bool:
        return all(config.get(k, v) == v for k, v in candidate.config.items())

    if fits(spec):
        return sampler
    for other in SAMPLERS.values():
        same_class = other.scheduler_class is spec.scheduler_class
        if same_class and schedule in other.schedules and fits(other):
            return other.name
    return sampler


def _label_of_config(config: Mapping[str, Any]) -> str | None:
    """A1111's schedule label for a scheduler config's own sigmas and spacing, if it has one."""
    for schedule, flag in SIGMA_FLAGS.items():
        if config.get(flag):
            return A1111_LABELS[schedule]
    spacing = config.get("timestep_spacing")
    if spacing == "leading":
        return A1111_LABELS["ddim"] if config.get("steps_offset") == 1 else None
    return A1111_LABELS.get(str(spacing))


def a1111_names(
    sampler: str | None, schedule: str, scheduler: str, config: Mapping[str, Any]
) -> tuple[str, str | None]:
    """What A1111 calls what ran: its "Sampler" and "Schedule type" infotext values.

    Args:
        sampler: the sampler's canonical name, or ``None`` for the model's own scheduler.
        schedule: the schedule that ran (``"default"``: the config's own).
        scheduler: the diffusers scheduler class name that ran.
        config: that scheduler's config.

    Returns:
        A1111's sampler name (sdkit's own name, or the class name, where A1111 has none) and
        its schedule label, or ``None`` where A1111 has no label for the schedule.

    Example:
        >>> a1111_names(None, "default", "EulerDiscreteScheduler", {"use_karras_sigmas": True})
        ('Euler', 'Karras')
        >>> a1111_names("DDIM", "trailing", "DDIMScheduler", {})
        ('DDIM', 'SGM Uniform')
    """
    spec = SAMPLERS.get(sampler) if sampler is not None else None
    if spec is None:
        spec = next(
            (
                s
                for s in SAMPLERS.values()
                if s.scheduler_class.__name__ == scheduler
                and all(config.get(k) == v for k, v in s.config.items())
            ),
            None,
        )
    name = spec.name if spec is not None else (sampler or scheduler)
    label = _label_of_config(config) if schedule == "default" else A1111_LABELS.get(schedule)
    return name, label


def read_a1111_names(sampler: str, label: str | None) -> tuple[str, str | None]:
    """The sdkit sampler and schedule that A1111's "Sampler" and "Schedule type" name.

    Unknown names come back as they are (the caller's checks judge them); a label A1111 does
    not write comes back as ``None``.

    Example:
        >>> read_a1111_names("DPM++ 2M", "Karras"), read_a1111_names("Euler", "SGM Uniform")
        (('DPM++ 2M', 'karras'), ('Euler', 'sgm_uniform'))
    """
    try:
        spec, suffix = _lookup_sampler(sampler)
        name = spec.name
    except InvalidOptionError:
        name, suffix = sampler, None
    if label is None:
        return name, suffix
    key = _key(label)
    return name, _SCHEDULE_INDEX.get(key, label)
