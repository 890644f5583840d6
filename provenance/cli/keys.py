"""``sdkit keys``: create and describe signing credentials (never prints key material)."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ..credentials import (
    Credentials,
    DevelopmentCredentials,
    default_credentials_dir,
    detect_algorithm,
    init_development_credentials,
)
from ..errors import ProvenanceError, SigningError
from ._common import ExitCode, Group, cli_error

__all__ = ["keys_group"]

_DIR = click.Path(file_okay=False, path_type=Path)


@click.group("keys", cls=Group)
def keys_group() -> None:
    """Signing credentials for Content Credentials (C2PA)."""


@keys_group.command("init")
@click.argument("directory", required=False, type=_DIR)
@click.option(
    "--overwrite",
    "--force",
    "force",
    is_flag=True,
    help="Replace credentials that already exist there (--force is the older name).",
)
def init_command(directory: Path | None, force: bool) -> None:
    """Create a development CA and a signing certificate in DIRECTORY.

    DIRECTORY defaults to the folder that sdkit signs from when SDKIT_SIGNING_CERT and
    SDKIT_SIGNING_KEY are not set. Nobody else trusts these credentials. Exit code 4 when
    they exist (without --overwrite) or cannot be written.
    """
    try:
        files = init_development_credentials(directory, force=force)
    except ProvenanceError as exc:  # they exist (without --force), or cannot be written
        raise cli_error(exc, ExitCode.FILE) from None
    click.echo(f"wrote development signing credentials to {files.directory}:")
    click.echo(f"  {files.certificate_chain.name:<17} signing certificate, then the CA")
    click.echo(f"  {files.private_key.name:<17} signing key (keep it private)")
    click.echo(f"  {files.ca_certificate.name:<17} development CA certificate (a trust anchor)")
    click.echo(f"  {files.ca_key.name:<17} CA key, to issue more certificates (keep it private)")
    click.echo(
        "These are for development only: nobody else trusts this CA, so files signed with it "
        "verify as valid but not trusted."
    )
    click.echo(
        f"To trust them yourself: sdkit verify --trust-anchors {files.ca_certificate} FILE "
        f"(or export SDKIT_TRUST_ANCHORS={files.ca_certificate})."
    )
    if directory is not None and directory.resolve() != default_credentials_dir().resolve():
        click.echo(
            f"To sign with them: export SDKIT_SIGNING_CERT={files.certificate_chain} "
            f"SDKIT_SIGNING_KEY={files.private_key}"
        )


@keys_group.command("show")
@click.argument("directory", required=False, type=_DIR)
def show_command(directory: Path | None) -> None:
    """Describe the signing certificate in DIRECTORY (default: the development credentials).

    Prints subject, issuer, algorithm, validity and SHA-256 fingerprint, then checks the
    certificate against the C2PA profile and its key (exit 5 when unusable).
    """
    files = DevelopmentCredentials.at(directory or default_credentials_dir())
    try:
        chain = _certificates(files.certificate_chain)
        cert = chain[0]
        algorithm = detect_algorithm(cert.public_key())
    except ProvenanceError as exc:
        raise cli_error(exc, ExitCode.CREDENTIALS) from None
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    click.echo(f"certificate: {files.certificate_chain} ({len(chain)} in chain)")
    click.echo(f"subject:     {cert.subject.rfc4514_string()}")
    click.echo(f"issuer:      {cert.issuer.rfc4514_string()}")
    click.echo(f"algorithm:   {algorithm}")
    click.echo(f"valid:       {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    click.echo(f"sha256:      {cert.fingerprint(hashes.SHA256()).hex(':').upper()}")
    try:
        creds = Credentials.from_files(files.certificate_chain, files.private_key)
    except ProvenanceError as exc:
        raise cli_error(exc, ExitCode.CREDENTIALS) from None
    untrusted = " (development: trusted by nobody else)" if creds.development else ""
    click.echo(f"status:      usable for C2PA signing{untrusted}")


def _certificates(path: Path) -> list[x509.Certificate]:
    hint = "Run `sdkit keys init` to create development credentials there."
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        raise SigningError(f"no signing certificate at {path}", path=str(path), hint=hint) from None
    except OSError as exc:
        raise SigningError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    except ValueError:
        raise SigningError(f"{path} holds no PEM certificate", path=str(path), hint=hint) from None
