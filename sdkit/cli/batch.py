"""``sdkit generate --prompts FILE``: the prompts file, checked line by line before any work.

The file holds one job per line: a prompt, or a JSON object with ``"prompt"`` and options of
that line (``negative_prompt``, ``sampler``, ``schedule``, ``steps``, ``guidance_scale``,
``guidance_rescale``, ``clip_skip``, ``width``, ``height``, ``strength``, ``feature_cache``,
``init_image``, ``mask``, ``seed``, ``num_images``: the keywords of ``Generator.__call__``).
Blank lines are skipped. Every line is checked before the model loads: a bad one is exit 2
naming its line. The images are made by :func:`sdkit.batch.generate_many`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provenance.cli._common import CliError, ExitCode

from ..batch import BatchPrompt
from ..errors import InvalidOptionError
from ..options import GenerationOptions

__all__ = ["JSON_KEYS", "read_prompts"]

#: The largest prompts file read (bytes): a file is read whole, so it is bounded.
MAX_BYTES = 64 * 1024 * 1024


def _existing_file(name: str, value: Any) -> None:
    if not isinstance(value, str) or not Path(value).is_file():
        raise InvalidOptionError(name, value, "the path of an image file")


#: The keys a JSON line may hold: ``prompt`` and the options of ``Generator.__call__`` that a
#: file can state (:class:`~sdkit.options.GenerationOptions` declares and checks them).
JSON_KEYS: tuple[str, ...] = (
    "prompt",
    *(
        f.name
        for f in dataclasses.fields(GenerationOptions)
        if f.name not in ("callback", "watermark_payloads")
    ),
)


def read_prompts(path: Path, defaults: Mapping[str, Any]) -> list[BatchPrompt]:
    """The jobs of a prompts file, every line checked (with ``defaults``, the CLI's options).

    Raises:
        CliError: the file is unreadable (exit 4), or a line is not a prompt or a valid JSON
            object of options (exit 2, naming the line).
    """
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CliError(
            f"cannot read the prompts file {path}: {exc.strerror or exc}",
            exit_code=ExitCode.FILE,
            hint="give --prompts a text file, one prompt (or JSON object) per line.",
        ) from None
    if len(data) > MAX_BYTES:
        raise CliError(
            f"the prompts file {path} is over {MAX_BYTES // 2**20} MiB",
            exit_code=ExitCode.USAGE,
            hint="split it into several files.",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _line_error(path, line, "is not UTF-8 text", "save the file as UTF-8.") from None
    jobs = [
        _job(path, number, line, defaults)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not jobs:
        raise CliError(
            f"the prompts file {path} holds no prompt",
            exit_code=ExitCode.USAGE,
            hint="write one prompt (or one JSON object with a 'prompt') per line.",
        )
    return jobs


def _job(path: Path, number: int, line: str, defaults: Mapping[str, Any]) -> BatchPrompt:
    if not line.lstrip().startswith("{"):
        return BatchPrompt(line.strip())
    try:
        fields = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise _line_error(path, number, f"is not valid JSON ({exc})", _JSON_HINT) from None
    if not isinstance(fields, dict):
        raise _line_error(path, number, "is not a JSON object", _JSON_HINT)
    unknown = sorted(set(fields) - set(JSON_KEYS))
    if unknown:
        keys = ", ".join(JSON_KEYS)
        raise _line_error(path, number, f"has an unknown key {unknown[0]!r}", f"keys: {keys}.")
    if "prompt" not in fields:
        raise _line_error(path, number, "has no 'prompt'", _JSON_HINT)
    try:
        if not isinstance(fields["prompt"], str):
            raise InvalidOptionError("prompt", fields["prompt"], "a string")
        for key in ("init_image", "mask"):
            if fields.get(key) is not None:
                _existing_file(key, fields[key])
        merged = {**defaults, **fields}
        stated = {k: v for k, v in merged.items() if k in JSON_KEYS and k != "prompt"}
        # every check that needs no model, the same ones a call runs (GenerationOptions)
        GenerationOptions.from_kwargs(stated).check_alone()
    except InvalidOptionError as exc:
        raise _line_error(path, number, exc.message, exc.hint or _JSON_HINT) from None
    options = {k: v for k, v in fields.items() if k not in ("prompt", "num_images", "seed")}
    return BatchPrompt(
        fields["prompt"], options, num_images=fields.get("num_images"), seed=fields.get("seed")
    )


_JSON_HINT = 'a line is a prompt, or a JSON object such as {"prompt": "a cat", "steps": 20}.'


def _line_error(path: Path, number: int, problem: str, hint: str) -> CliError:
    return CliError(f"{path}, line {number}: {problem}", exit_code=ExitCode.USAGE, hint=hint)
