"""API tokens: made, listed, revoked and checked against the store.

A token is a secret shown once (``tth_`` and 43 URL-safe characters: 256 bits
from :mod:`secrets`) and a row keeping only its SHA-256. Creating and revoking
are store-chain events (``token.created``, ``token.revoked``) naming who did it;
the rows are their projection, written in the same transaction, and ``tether
audit verify`` names a row that disagrees with the chain.
"""

from __future__ import annotations

import hmac
import secrets

from tether.core.identity import (
    TOKEN_PREFIX,
    Principal,
    Role,
    TokenInfo,
    check_token_name,
    created_payload,
    hash_secret,
    token_created,
    well_formed,
)
from tether.core.ids import UlidSource, iso
from tether.core.settings import STORE_SCOPE
from tether.errors import NotFound, UsageError
from tether.store.protocol import Store
from tether.system_clock import SYSTEM_CLOCK


def new_secret() -> str:
    """A fresh token secret: :data:`~tether.core.identity.TOKEN_PREFIX` and 32 random bytes."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(store: Store, name: str, role: Role | str, who: str) -> tuple[TokenInfo, str]:
    """Make a token for ``name`` with ``role``, journaled as ``token.created`` by ``who``.

    Returns the token's record and its secret, which is kept nowhere: show it once.

    Raises:
        UsageError: a name a token cannot have, an unknown role, or a valid token with
            this name already (revoke it first).
    """
    check_token_name(name)
    r = role if isinstance(role, Role) else Role.parse(role)
    secret = new_secret()
    now = SYSTEM_CLOCK.now()
    tid = UlidSource(lambda: now).new()
    e = store.append_store_event("token.created", STORE_SCOPE,
                                 created_payload(tid, name, r, hash_secret(secret)),
                                 actor=who, time=iso(now), id=tid)
    return token_created(e.payload, time=e.time, actor=e.actor), secret


def list_tokens(store: Store, *, revoked: bool = True) -> list[TokenInfo]:
    """Every token, oldest first; only the valid ones with ``revoked=False``."""
    return store.tokens(active=not revoked)


def find_token(store: Store, name_or_id: str) -> TokenInfo:
    """The valid token named ``name_or_id``, else the token with that id (revoked or not).

    Raises:
        NotFound: neither.
    """
    tokens = store.tokens()
    for t in tokens:
        if t.active and t.name == name_or_id:
            return t
    for t in tokens:
        if t.id == name_or_id or t.id == name_or_id.upper():
            return t
    raise NotFound(f"no valid token named {name_or_id!r} and no token with that id; "
                   "`tether ui token list` shows them")


def revoke_token(store: Store, name_or_id: str, who: str) -> TokenInfo:
    """Revoke a token (by its name while valid, or its id), journaled as ``token.revoked``
    by ``who``; from then on it authenticates no one. Returns the revoked token.

    Raises:
        NotFound: no such token.
        UsageError: it was revoked already.
    """
    t = find_token(store, name_or_id)
    if not t.active:
        raise UsageError(f"token {t.name!r} ({t.id}) was revoked already at {t.revoked} by "
                         f"{t.revoked_by}")
    now = SYSTEM_CLOCK.now()
    e = store.append_store_event("token.revoked", STORE_SCOPE, {"token": t.id, "name": t.name},
                                 actor=who, time=iso(now), id=UlidSource(lambda: now).new())
    return TokenInfo(id=t.id, name=t.name, role=t.role, hash=t.hash, created=t.created,
                     created_by=t.created_by, revoked=e.time, revoked_by=e.actor)


def authenticate(store: Store, secret: str) -> Principal | None:
    """Who ``secret`` makes the bearer: the valid token's name and role, else None.

    A string without a token's form is refused before anything is read. The row is
    found by the secret's hash (a 256-bit secret's hash gives nothing away by how
    fast it is found), and the hashes are then compared in constant time.
    """
    if not well_formed(secret):
        return None
    digest = hash_secret(secret)
    t = store.token_by_hash(digest)
    if t is None or not t.active or not hmac.compare_digest(t.hash, digest):
        return None
    return Principal(t.name, t.role, "token")


def tokens_exist(store: Store) -> bool:
    """Whether any valid token exists: once one does, the web UI asks every request for one
    (so it is one indexed probe, however many tokens there are)."""
    return bool(store.tokens(active=True, limit=1))
