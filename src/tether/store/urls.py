"""What a message may show of a store URL: never a password.

Importable without the ``postgres`` extra: the CLI and :func:`tether.store.open_store` name
a PostgreSQL URL in their errors even when the driver that would parse it is missing.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, quote, unquote, urlencode, urlsplit

from tether.errors import UsageError

# Greedy to the last '@', and the user name may hold an unencoded '@' too: a password
# written with a reserved character (/ ? # @) that should have been percent-encoded is
# still hidden (a URL with '@' in its query is then shown short, which is the safe way to
# be wrong).
_USERINFO_PASSWORD = re.compile(r"(//[^/:?#]*):.*@")
_PASSWORD_OPTION = re.compile(r"([?&])(?:ssl)?password=[^&#]*&?")
_SECRET_OPTIONS = ("password", "sslpassword")
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
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
        raise UsageError(f"store {without_password(url)} is not a valid URL ({exc}); e.g. "
                         "postgresql://user@host:5432/dbname?schema=tether") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise UsageError(f"store {without_password(url)} is not a postgresql:// URL")
    if "@" not in parts.netloc and "@" in url.partition("://")[2]:
        # libpq reads the user part only up to the first / ? or #, as urlsplit does.
        raise UsageError(f"store {without_password(url)}: the part before '@' holds a "
                         "character URLs reserve (/ ? #); percent-encode it (/ is %2F, ? is "
                         "%3F, # is %23), or give the password by PGPASSWORD or ~/.pgpass")
    if parts.netloc.count("@") > 1:
        # libpq ends the user part at the first '@': the rest of the password would be
        # taken for the host, and a failing connection's message would print it.
        raise UsageError(f"store {without_password(url)}: the part before the host holds "
                         "'@' more than once; percent-encode an '@' in a user name or "
                         "password as %40, or give the password by PGPASSWORD or ~/.pgpass")
    options = _query(parts.query)
    names = [v for k, v in options if k == "schema"]
    name = names[-1] if names else "tether"
    rest = [(k, v) for k, v in options if k not in ("schema", *_SECRET_OPTIONS)]
    shown = _unsplit(parts.scheme, _netloc(parts, with_password=False), parts.path,
                     [(k, v) for k, v in options if k not in _SECRET_OPTIONS])
    if not _IDENT.fullmatch(name):
        raise UsageError(f"store {shown}: schema {name!r} is not a plain identifier (letters, "
                         "digits and _, not starting with a digit, at most 63); e.g. ?schema=tether")
    secret = [(k, v) for k, v in options if k in _SECRET_OPTIONS]
    conninfo = _unsplit("postgresql", _netloc(parts, with_password=True), parts.path,
                        rest + secret)
    return conninfo, name.lower(), shown


def _unsplit(scheme: str, netloc: str, path: str, options: list[tuple[str, str]]) -> str:
    """The URL of these parts, with its ``//`` even when the host is empty
    (``postgresql:///db``, host from PGHOST or the local socket), which urlunsplit drops."""
    query = _encode(options)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


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
    uri = _unsplit(parts.scheme, _netloc(parts, with_password=False), parts.path,
                   [(k, v) for k, v in options if k != "password"])
    return uri, ({"PGPASSWORD": secret} if secret is not None else {})
