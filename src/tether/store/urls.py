"""What a message may show of a store URL: never a password.

Importable without the ``postgres`` extra: the CLI and :func:`tether.store.open_store` name
a PostgreSQL URL in their errors even when the driver that would parse it is missing.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, quote, unquote, urlencode, urlsplit, urlunsplit

from tether.errors import UsageError

_USERINFO_PASSWORD = re.compile(r"(//[^/:@?#]*):[^@/?#]*@")
_PASSWORD_OPTION = re.compile(r"([?&])password=[^&#]*&?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL store (``postgresql://`` or ``postgres://``)."""
    return url.startswith(("postgres://", "postgresql://"))


def without_password(url: str) -> str:
    """``url`` with any password removed, for messages.

    >>> without_password("postgresql://ops:s3cret@db.example/tether?schema=prod")
    'postgresql://ops@db.example/tether?schema=prod'
    >>> without_password("postgresql://db.example/tether?password=s3cret&schema=prod")
    'postgresql://db.example/tether?schema=prod'
    """
    url = _USERINFO_PASSWORD.sub(r"\1@", url, count=1)
    return _PASSWORD_OPTION.sub(r"\1", url).rstrip("?&")


def _query(query: str) -> list[tuple[str, str]]:
    """A URL's query as libpq reads it: percent-decoded, with ``+`` a plain ``+``
    (``parse_qsl`` reads it as a space, as HTML forms do, and ``options=-c%20x%3Dy`` would
    then reach the server as ``-c+x=y``)."""
    pairs = []
    for part in query.split("&"):
        if part:
            k, _, v = part.partition("=")
            pairs.append((unquote(k), unquote(v)))
    return pairs


def _encode(pairs: list[tuple[str, str]]) -> str:
    """The inverse of :func:`_query`: a space as ``%20``, never ``+``."""
    return urlencode(pairs, quote_via=quote)


def parse_url(url: str) -> tuple[str, str, str]:
    """``(conninfo, schema, shown)`` of a ``postgresql://`` (or ``postgres://``) URL.

    ``conninfo`` is what libpq connects with (the URL without tether's own ``schema``
    option, password included); ``schema`` the store's schema, folded to lower case as
    PostgreSQL folds a plain identifier; ``shown`` the URL for messages, without any
    password. Raises UsageError for a URL that is not one, or a schema name that is not
    a plain identifier."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise UsageError(f"store {without_password(url)} is not a postgresql:// URL")
    options = _query(parts.query)
    names = [v for k, v in options if k == "schema"]
    name = names[-1] if names else "tether"
    rest = [(k, v) for k, v in options if k not in ("schema", "password")]
    shown = urlunsplit((parts.scheme, _netloc(parts, with_password=False), parts.path,
                        _encode([(k, v) for k, v in options if k != "password"]), ""))
    if not _IDENT.fullmatch(name):
        raise UsageError(f"store {shown}: schema {name!r} is not a plain identifier (letters, "
                         "digits and _, not starting with a digit, at most 63); e.g. ?schema=tether")
    secret = [(k, v) for k, v in options if k == "password"]
    conninfo = urlunsplit(("postgresql", _netloc(parts, with_password=True), parts.path,
                           _encode(rest + secret), ""))
    return conninfo, name.lower(), shown


def _netloc(parts: SplitResult, *, with_password: bool) -> str:
    """The URL's ``user[:password]@host:port`` as written (still percent-encoded)."""
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return host
    user, colon, password = userinfo.partition(":")
    return f"{user}:{password}@{host}" if with_password and colon else f"{user}@{host}"


def libpq_target(conninfo: str) -> tuple[str, dict[str, str]]:
    """``conninfo`` split for a client tool (pg_dump): the URL without its password, and
    the environment that gives it (``PGPASSWORD``), so no password shows in a process
    list."""
    parts = urlsplit(conninfo)
    options = _query(parts.query)
    given = [v for k, v in options if k == "password"]
    secret = unquote(parts.password) if parts.password else (given[-1] if given else None)
    uri = urlunsplit((parts.scheme, _netloc(parts, with_password=False), parts.path,
                      _encode([(k, v) for k, v in options if k != "password"]), ""))
    return uri, ({"PGPASSWORD": secret} if secret is not None else {})
