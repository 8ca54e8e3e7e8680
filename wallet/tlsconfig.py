"""TLS for the merchant service and the wallet's connections to it (docs/DESIGN.md,
"Merchant terms and TLS").

Server side: ``ServerTls`` holds the certificate chain and key files of ``merchant serve
--tls-cert/--tls-key``; ``check`` loads them once so a wrong file fails at start with a
clear message, ``apply`` hands them to hypercorn (``Config.certfile`` / ``keyfile``).

Client side: an ``https://`` merchant URL is verified against the system's trust store,
or against the CA file given with ``--cacert FILE`` (``cacert_option``; environment
``MICROCASH_CACERT``), for the certificate chain *and* the host name. ``client_context``
is the one ``ssl.SSLContext`` every wallet HTTP connection uses; ``explain_tls_error``
turns a failed verification into an error that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import ssl

CACERT_ENV = "MICROCASH_CACERT"

_cafile: Path | None = None
_context: ssl.SSLContext | None = None


class TlsError(OSError):
    """A TLS set-up or verification failure, with a message that says what to do."""


@dataclass(frozen=True)
class ServerTls:
    """The PEM certificate chain and private key of a TLS merchant service."""

    certfile: Path
    keyfile: Path

    def check(self) -> ServerTls:
        """``self`` once the pair loads as a server identity; raises ``TlsError``."""
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot use TLS certificate {self.certfile} with key "
                           f"{self.keyfile}: {exc}") from None
        return self

    def apply(self, config: Any) -> None:
        """Set a hypercorn ``Config`` to serve TLS with these files."""
        config.certfile = str(self.certfile)
        config.keyfile = str(self.keyfile)


def set_cafile(path: Path | str | None) -> None:
    """Verify ``https://`` servers against the CA certificates in ``path`` (PEM) from now
    on; ``None``: the system trust store. Raises ``TlsError`` if the file does not load."""
    global _cafile, _context
    _cafile = None if path is None else Path(path)
    _context = None
    if _cafile is not None:
        client_context()  # load now: a bad file is reported where it was given


def client_context() -> ssl.SSLContext:
    """The client ``SSLContext``: certificate and host name verified, TLS 1.2 or later,
    trusting ``set_cafile``'s file (or the system store). Raises ``TlsError``."""
    global _context
    if _context is None:
        import ssl

        try:
            context = ssl.create_default_context(cafile=None if _cafile is None
                                                 else str(_cafile))
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot load CA certificates from {_cafile}: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _context = context
    return _context


def explain_tls_error(exc: BaseException, host: str, port: int | None) -> BaseException:
    """A ``TlsError`` saying the server at ``host:port`` is not trusted, for a certificate
    verification failure ``exc``; any other exception is returned unchanged."""
    import ssl

    if not isinstance(exc, ssl.SSLCertVerificationError):
        return exc
    where = f"{host}:{port}" if port else host
    trust = f"the CA file {_cafile}" if _cafile is not None else "the system trust store"
    return TlsError(f"TLS certificate of {where} not trusted ({exc.verify_message}) by "
                    f"{trust}; give the CA that signed it with --cacert FILE")


def _set_from_option(ctx: Any, param: Any, value: Path | None) -> None:
    import click

    if value is None:
        return
    try:
        set_cafile(value)
    except TlsError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def cacert_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--cacert FILE`` option of a command that talks to merchant services; it sets
    ``set_cafile`` before the command runs (nothing reaches the command itself)."""
    import click

    return click.option(
        "--cacert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar=CACERT_ENV, expose_value=False, is_eager=True, callback=_set_from_option,
        help="PEM file of the CA certificates that https:// merchant services are "
             f"verified against (default: the system's; also ${CACERT_ENV}).")(command)


def tls_server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--tls-cert FILE`` / ``--tls-key FILE`` to ``command``; they reach it as one
    ``tls`` keyword: a checked ``ServerTls``, or ``None`` (plain HTTP) when neither is
    given. One without the other, or a pair that does not load, is a usage error."""
    import functools

    import click

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cert, key = kwargs.pop("tls_cert"), kwargs.pop("tls_key")
        if (cert is None) != (key is None):
            raise click.UsageError("give both --tls-cert and --tls-key, or neither")
        try:
            kwargs["tls"] = None if cert is None else ServerTls(cert, key).check()
        except TlsError as exc:
            raise click.UsageError(str(exc)) from None
        return command(*args, **kwargs)

    path = click.Path(exists=True, dir_okay=False, path_type=Path)
    wrapper = click.option("--tls-key", type=path, default=None,
                           help="PEM private key of --tls-cert.")(wrapper)
    return click.option("--tls-cert", type=path, default=None,
                        help="PEM certificate chain: serve HTTPS instead of HTTP "
                             "(with --tls-key).")(wrapper)
