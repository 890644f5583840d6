"""``sdkit optout``: check URLs, files and datasets for opt-outs; keep a registry of works.

Exit codes are those of the one table, :class:`~provenance.cli._common.ExitCode`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import OptOutError
from ..optout.checker import DEFAULT_USER_AGENT, OptOutChecker
from ..optout.dataset import DatasetSummary
from ..optout.decision import Decision
from ..optout.registry import MATCH_DISTANCE, OptOutRegistry
from ._common import CliError, ExistingPath, ExitCode, Group, cli_error

__all__ = ["optout_group"]


def _checker_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--registry",
            type=click.Path(dir_okay=False),
            envvar="SDKIT_OPTOUT_REGISTRY",
            show_envvar=True,
            help="Registry of opted-out works (from `sdkit optout registry add`).",
        ),
        click.option(
            "--on-error",
            type=click.Choice(["deny", "allow"]),
            default="deny",
            show_default=True,
            help="What an unknown (timeout, 5xx, unreadable) counts as.",
        ),
        click.option(
            "--user-agent",
            default=DEFAULT_USER_AGENT,
            show_default=False,
            help="User-Agent sent; its first word is ours in robots.txt and ai.txt.",
        ),
        click.option("--timeout", default=10.0, show_default=True, help="Seconds per request."),
        click.option(
            "--concurrency", default=256, show_default=True, help="Connections at once, in all."
        ),
        click.option(
            "--per-host", default=16, show_default=True, help="Connections at once to one host."
        ),
        click.option(
            "--allow-private",
            is_flag=True,
            help="Allow loopback, private and link-local addresses (intranets, tests).",
        ),
        click.option(
            "--verify-c2pa",
            is_flag=True,
            help="Validate C2PA manifests and name their state (slower; same decisions).",
        ),
        click.option(
            "--no-site-files", is_flag=True, help="Do not fetch robots.txt, ai.txt, tdmrep.json."
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _checker_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "registry": options["registry"],
        "on_error": options["on_error"],
        "user_agent": options["user_agent"],
        "timeout": options["timeout"],
        "concurrency": options["concurrency"],
        "per_host": options["per_host"],
        "allow_private": options["allow_private"],
        "site_files": not options["no_site_files"],
        "verify_c2pa": options["verify_c2pa"],
    }


def _make_checker(options: dict[str, Any]) -> OptOutChecker:
    try:
        return OptOutChecker(**_checker_kwargs(options))
    except OptOutError as exc:
        raise cli_error(exc, ExitCode.FILE if options["registry"] else ExitCode.USAGE) from None


@click.group("optout", cls=Group)
def optout_group() -> None:
    """Opt-outs from AI training: HTTP headers, robots.txt / ai.txt / tdmrep.json, HTML meta,
    C2PA and IPTC metadata in files, and a registry of works.

    An unknown (timeout, 5xx, unreadable) is not allowed unless --on-error allow.
    See docs/optout.md for every signal, its source and precedence.
    """


@optout_group.command("check")
@click.argument("targets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target (JSONL).")
@_checker_options
def check_command(targets: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """May each URL or FILE be used for AI training? One decision each, with its evidence.

    Exit codes: 0 every target allowed, 1 at least one disallowed (an opt-out was found),
    3 none disallowed but at least one unknown and not allowed (fail closed), 4 the
    registry cannot be opened.
    """
    with _make_checker(options) as checker:
        decisions = checker.check_many(list(targets))
    for decision in decisions:
        click.echo(json.dumps(decision.to_dict()) if as_json else _text(decision))
    sys.exit(_exit_code(decisions))


def _exit_code(decisions: list[Decision]) -> ExitCode:
    if any(d.verdict == "disallowed" for d in decisions):
        return ExitCode.NO
    if any(not d.allowed for d in decisions):
        return ExitCode.NO_ANSWER
    return ExitCode.OK


def _text(decision: Decision) -> str:
    colour = {"allowed": "green", "disallowed": "red", "unknown": "yellow"}[decision.verdict]
    lines = decision.to_text().split("\n")
    lines[0] = click.style(lines[0], fg=colour, bold=True)
    return "\n".join(lines)


@optout_group.command("check-dataset")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file (.csv, .jsonl, .parquet).",
)
@click.option("--url-column", default="url", show_default=True)
@click.option(
    "--path-column",
    default="path",
    show_default=True,
    help="Relative paths are under the files root; paths leading outside it are refused.",
)
@click.option(
    "--files-root",
    type=click.Path(file_okay=False),
    default=None,
    help="The folder every path of the path column must lie in (default: the dataset's folder).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output (never the input).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar with rate on stderr (default: when stderr is a terminal).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help='Where to check: this process, or Ray actors (pip install "sdkit[ray]"); see docs/scale-out.md.',
)
@click.option(
    "--address", default=None, help="--engine ray: a running cluster (default: a local one)."
)
@click.option(
    "--actors",
    type=click.IntRange(min=1),
    default=None,
    help="--engine ray: workers (default: CPUs - 1).",
)
@click.option(
    "--rows-per-shard",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="--engine ray: rows per shard, the unit of retry and resume.",
)
@_checker_options
def check_dataset_command(
    source: str,
    output: str,
    url_column: str,
    path_column: str,
    files_root: str | None,
    overwrite: bool,
    progress: bool | None,
    engine: str,
    address: str | None,
    actors: int | None,
    rows_per_shard: int,
    **options: Any,
) -> None:
    """Check every row of SOURCE (CSV, JSON Lines or Parquet with a url and/or path column).

    Writes -o with the input's columns plus allowed, decision, signals and evidence, and
    OUTPUT.summary.json. A row's URL is fetched only if it is http(s) (never read as a file),
    and its path read only if it is a regular file under --files-root; a row that is refused
    or whose check fails is unknown (not allowed) with the reason, and the others are kept.
    Interrupted runs keep OUTPUT.partial: run the same command again to continue where it
    stopped.

    --engine ray spreads fixed shards over Ray actors (same decisions, same output); shards
    that keep failing make it exit 8 and are named, and running it again re-runs only them.

    Exit codes: 0 every row checked (whatever the decisions; see the summary), 2 an option
    is wrong, 4 the input cannot be read, the output exists or cannot be written, or the
    registry cannot be opened, 8 --engine ray: Ray is missing or shards did not finish (no
    output written), 130 interrupted (finished rows are kept; run again to resume).
    """
    from tqdm import tqdm

    from ..optout.dataset import check_dataset

    if engine != "ray" and (address is not None or actors is not None):
        raise CliError("--address and --actors need --engine ray", exit_code=ExitCode.USAGE)
    checker = _make_checker(options)
    if engine == "ray":
        _check_dataset_ray(
            source,
            output,
            url_column,
            path_column,
            files_root,
            overwrite,
            progress,
            address,
            actors,
            rows_per_shard,
            options,
        )
        checker.close()
        return
    bar = tqdm(
        unit="row",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        smoothing=0.1,
        desc="optout",
    )
    try:
        summary = check_dataset(
            source,
            output,
            checker,
            url_column=url_column,
            path_column=path_column,
            files_root=files_root,
            overwrite=overwrite,
            progress=bar.update,
        )
    except OptOutError as exc:
        bar.close()
        raise cli_error(exc, ExitCode.FILE) from None
    except KeyboardInterrupt:
        bar.close()
        click.echo(
            f"interrupted: finished rows are kept in {output}.partial; run the same command to resume",
            err=True,
        )
        sys.exit(ExitCode.INTERRUPTED)
    finally:
        checker.close()
    bar.close()
    _report(summary)


def _check_dataset_ray(
    source: str,
    output: str,
    url_column: str,
    path_column: str,
    files_root: str | None,
    overwrite: bool,
    progress: bool | None,
    address: str | None,
    actors: int | None,
    rows_per_shard: int,
    options: dict[str, Any],
) -> None:
    import functools

    from tqdm import tqdm

    from ..optout.dataset_files import dataset_format
    from ..optout.distributed import RayOptions, check_dataset_ray, import_ray

    try:  # before any work; Ray missing is a usage error, as for `sdkit generate --engine ray`
        import_ray()
    except OptOutError as exc:
        raise cli_error(exc, ExitCode.USAGE) from None
    try:
        dataset_format(output)
    except OptOutError as exc:  # a bad -o suffix is 4
        raise cli_error(exc, ExitCode.FILE if exc.path else ExitCode.ERROR) from None
    bar = tqdm(
        unit="row",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        desc="optout",
    )
    try:
        summary = check_dataset_ray(
            source,
            output,
            functools.partial(OptOutChecker, **_checker_kwargs(options)),
            options=RayOptions(address=address, actors=actors, rows_per_shard=rows_per_shard),
            url_column=url_column,
            path_column=path_column,
            files_root=files_root,
            overwrite=overwrite,
            progress=bar.update,
        )
    except OptOutError as exc:
        bar.close()
        shards = exc.path is not None and exc.path.endswith(".shards")
        raise cli_error(
            exc, ExitCode.ERROR if shards or exc.path is None else ExitCode.FILE
        ) from None
    bar.close()
    _report(summary)


def _report(summary: DatasetSummary) -> None:
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    click.echo(
        f"wrote {summary.output}: {summary.rows} rows, {summary.allowed} allowed, {summary.disallowed} disallowed, {summary.unknown} unknown; {summary.usable} usable"
        + (f" ({summary.resumed} from an earlier run)" if summary.resumed else "")
        + f"; {rate:.0f} rows/s"
    )
    for name, count in summary.by_signal.items():
        click.echo(f"  {name}: {count}")


@optout_group.group("registry", cls=Group)
def registry_group() -> None:
    """A local registry of opted-out works, matched by perceptual hash (resized, re-encoded and
    slightly cropped copies are found)."""


_registry_option = click.option(
    "--registry",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="SDKIT_OPTOUT_REGISTRY",
    show_envvar=True,
    help="The registry file (SQLite; created by add).",
)


def _open_registry(path: str) -> OptOutRegistry:
    try:
        return OptOutRegistry(path)
    except OptOutError as exc:
        raise cli_error(exc, ExitCode.FILE) from None


@registry_group.command("add")
@click.argument("images", nargs=-1, required=True, type=ExistingPath())
@_registry_option
@click.option("--label", default="", help="Who and what (creator, title), kept with each entry.")
def registry_add(images: tuple[str, ...], path: str, label: str) -> None:
    """Register IMAGES as opted-out works. Exit 4 if one cannot be read (the others are kept)."""
    failed = False
    with _open_registry(path) as registry:
        for image in images:
            try:
                entry = registry.add(image, label=label)
            except OptOutError as exc:
                click.echo(f"{image}: error: {exc.message}", err=True)
                failed = True
                continue
            click.echo(f"#{entry.id} {image} (phash {entry.phash})")
    sys.exit(ExitCode.FILE if failed else ExitCode.OK)


@registry_group.command("check")
@click.argument("images", nargs=-1, required=True, type=ExistingPath())
@_registry_option
@click.option(
    "--max-distance",
    default=MATCH_DISTANCE,
    show_default=True,
    help="Bits (of 64) within which a copy matches.",
)
@click.option("--json", "as_json", is_flag=True)
def registry_check(images: tuple[str, ...], path: str, max_distance: int, as_json: bool) -> None:
    """Is each of IMAGES a registered work? Exit 1 if any is, 4 if one cannot be read."""
    code = ExitCode.OK
    with _open_registry(path) as registry:
        for image in images:
            try:
                match = registry.match(image, max_distance=max_distance)
            except OptOutError as exc:
                click.echo(f"{image}: error: {exc.message}", err=True)
                code = ExitCode.FILE
                continue
            if match is not None and code == ExitCode.OK:
                code = ExitCode.NO
            if as_json:
                click.echo(json.dumps({"path": image, "match": match.to_dict() if match else None}))
            elif match is None:
                click.echo(f"{image}: no match")
            else:
                click.echo(
                    f"{image}: matches #{match.entry.id} {match.label!r} (distance {match.distance})"
                )
    sys.exit(code)


@registry_group.command("list")
@_registry_option
@click.option("--json", "as_json", is_flag=True)
def registry_list(path: str, as_json: bool) -> None:
    """List the registered works."""
    with _open_registry(path) as registry:
        for entry in registry.entries():
            if as_json:
                click.echo(json.dumps(entry.to_dict()))
            else:
                click.echo(
                    f"#{entry.id}  {entry.phash}  {entry.added}  {entry.label or '-'}  {entry.source}"
                )
