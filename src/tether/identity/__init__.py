"""Identities and roles: API tokens, who the CLI records, and who may do what.

The web UI and API authenticate a bearer with :func:`authenticate` and check each
action with :func:`permits` (or :meth:`Principal.can`); the CLI records the OS
user, or a name claimed with ``--as`` where :func:`as_allowed`. Roles, the
permissions table and token records are pure (:mod:`tether.core.identity`);
this package does the I/O (random secrets, the store).

Example:
    >>> from tether.identity import authenticate, create_token, permits
    >>> info, secret = create_token(store, "ada", "operator", who="human:root")  # doctest: +SKIP
    >>> authenticate(store, secret).can("approve")  # doctest: +SKIP
    True
"""

from tether.core.identity import (
    PERMISSIONS,
    ROLE_NAMES,
    TOKEN_PREFIX,
    Principal,
    Role,
    TokenInfo,
    check_token_name,
    permits,
)
from tether.identity.claims import (
    allow_as_event,
    as_allowed,
    os_principal,
    os_user,
    set_allow_as,
)
from tether.identity.tokens import (
    authenticate,
    create_token,
    find_token,
    list_tokens,
    revoke_token,
    tokens_exist,
)

__all__ = ["PERMISSIONS", "ROLE_NAMES", "TOKEN_PREFIX", "Principal", "Role", "TokenInfo",
           "allow_as_event", "as_allowed", "authenticate", "check_token_name", "create_token",
           "find_token", "list_tokens", "os_principal", "os_user", "permits", "revoke_token",
           "set_allow_as", "tokens_exist"]
