"""What a message may show of a store URL: never a password.

Importable without the ``postgres`` extra: the CLI and :func:`tether.store.open_store` name
a PostgreSQL URL in their errors even when the driver that would parse it is missing.
"""

from __future__ import annotations

import re

_USERINFO_PASSWORD = re.compile(r"(//[^/:@?#]*):[^@/?#]*@")
_PASSWORD_OPTION = re.compile(r"([?&])password=[^&#]*&?")


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
