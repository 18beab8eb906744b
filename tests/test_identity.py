"""Identities: roles and the permissions table, token secrets and their hashes, and tokens
created, authenticated and revoked through a real store's chain."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from tether import verify_store
from tether.core.identity import (
    PERMISSIONS,
    SECRET_CHARS,
    Principal,
    Role,
    TokenInfo,
    check_token_name,
    fold_tokens,
    hash_secret,
    permits,
    well_formed,
)
from tether.errors import NotFound, UsageError
from tether.identity import (
    TOKEN_PREFIX,
    authenticate,
    create_token,
    list_tokens,
    os_principal,
    os_user,
    revoke_token,
    tokens_exist,
)
from tether.store.sqlite import SQLiteStore

OPERATOR_ACTIONS = {"approve", "deny", "pause", "resume", "stop", "resolve", "acknowledge"}
ADMIN_ACTIONS = {"rollback", "cascade", "fork", "quarantine", "release", "budget",
                 "policy_apply", "tokens", "settings", "erase"}


# -- pure: roles, permissions, secrets ------------------------------------------------------

def test_roles_are_ordered_and_parsed_by_name() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert [Role.parse(n) for n in ("viewer", " Operator ", "ADMIN")] == list(Role)
    assert Role.OPERATOR.label == "operator"
    with pytest.raises(UsageError, match="role 'root': use one of viewer, operator, admin"):
        Role.parse("root")


def test_the_permissions_table_gives_each_action_its_least_role() -> None:
    assert set(PERMISSIONS) == {"read"} | OPERATOR_ACTIONS | ADMIN_ACTIONS
    for action in PERMISSIONS:
        allowed = {r for r in Role if permits(r, action)}
        least = (Role.VIEWER if action == "read" else
                 Role.OPERATOR if action in OPERATOR_ACTIONS else Role.ADMIN)
        assert allowed == {r for r in Role if r >= least}, action
    assert not permits(Role.VIEWER, "approve") and not permits(Role.OPERATOR, "rollback")
    with pytest.raises(ValueError, match="unknown action 'aprove'"):
        permits(Role.ADMIN, "aprove")  # a typo is never silently allowed or refused


def test_a_principal_acts_as_a_human_and_can_what_its_role_permits() -> None:
    p = Principal("ada", Role.OPERATOR, "token")
    assert p.actor == "human:ada" and p.can("stop") and not p.can("fork")
    assert p.to_json() == {"name": "ada", "role": "operator", "source": "token"}
    me = os_principal()
    assert me.name == os_user() and me.role is Role.ADMIN and me.source == "os"


def test_a_secret_is_hashed_with_sha256_and_checked_for_its_form() -> None:
    secret = TOKEN_PREFIX + "A" * SECRET_CHARS
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert well_formed(secret)
    for bad in (secret[:-1], secret + "A", "tth-" + "A" * SECRET_CHARS,
                TOKEN_PREFIX + "A" * 42 + "=", "", None, 42, secret + "\n"):
        assert not well_formed(bad), bad


@pytest.mark.parametrize("name", ["", "-ada", "a b", "ada:x", "x" * 65, "ada\n", "é"])
def test_a_token_name_is_a_plain_word(name: str) -> None:
    with pytest.raises(UsageError, match="token name"):
        check_token_name(name)


def test_fold_tokens_replays_creation_and_revocation() -> None:
    class E:
        def __init__(self, kind: str, payload: object, time: str, actor: str) -> None:
            self.kind, self.payload, self.time, self.actor = kind, payload, time, actor

    made = {"token": "T1", "name": "ada", "role": "admin", "hash": "ab" * 32}
    folded = fold_tokens([E("token.created", made, "t1", "human:root"),
                          E("policy.applied", {}, "t2", "human:root"),
                          E("token.created", {"name": "broken"}, "t3", "human:root"),
                          E("token.revoked", {"token": "T1"}, "t4", "human:bob"),
                          E("token.revoked", {"token": "T1"}, "t5", "human:eve")])
    assert folded == {"T1": TokenInfo("T1", "ada", Role.ADMIN, "ab" * 32, "t1", "human:root",
                                      "t4", "human:bob")}


# -- a real store -----------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "t.db")


def test_a_token_authenticates_until_it_is_revoked(store: SQLiteStore) -> None:
    assert not tokens_exist(store) and list_tokens(store) == []
    info, secret = create_token(store, "ada", "operator", who="human:root")
    assert secret.startswith(TOKEN_PREFIX) and well_formed(secret)
    assert (info.name, info.role, info.created_by, info.active) == \
        ("ada", Role.OPERATOR, "human:root", True)
    assert info.hash == hash_secret(secret) and tokens_exist(store)
    assert list_tokens(store) == [info]
    assert authenticate(store, secret) == Principal("ada", Role.OPERATOR, "token")
    assert authenticate(store, secret[:-1] + ("B" if secret[-1] != "B" else "C")) is None
    assert authenticate(store, "tth_x") is None
    gone = revoke_token(store, "ada", who="human:bob")
    assert gone.revoked is not None and gone.revoked_by == "human:bob"
    assert authenticate(store, secret) is None and not tokens_exist(store)
    assert list_tokens(store) == [gone] and list_tokens(store, revoked=False) == []
    chain = store.store_events()
    assert [(e.kind, e.actor) for e in chain] == [("token.created", "human:root"),
                                                  ("token.revoked", "human:bob")]
    assert chain[0].payload == {"token": info.id, "name": "ada", "role": "operator",
                                "hash": info.hash}
    assert chain[0].id == info.id and chain[1].payload == {"token": info.id, "name": "ada"}
    assert verify_store(store).ok


def test_the_secret_is_never_stored(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    _, secret = create_token(store, "ada", Role.ADMIN, who="human:root")
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("t.db"))
    assert secret.encode() not in raw and secret[len(TOKEN_PREFIX):].encode() not in raw
    assert hash_secret(secret).encode() in raw or bytes.fromhex(hash_secret(secret)) in raw


def test_a_name_names_one_valid_token_and_a_refusal_writes_nothing(store: SQLiteStore) -> None:
    first, _ = create_token(store, "ada", "viewer", who="human:root")
    with pytest.raises(UsageError, match=f"a token named 'ada' exists already \\(id {first.id}\\)"):
        create_token(store, "ada", "admin", who="human:root")
    assert len(store.store_events()) == 1 and len(store.tokens()) == 1
    revoke_token(store, "ada", who="human:root")
    with pytest.raises(UsageError, match="revoked already"):
        revoke_token(store, first.id, who="human:root")  # by id: found, but revoked
    with pytest.raises(NotFound, match="no valid token named 'ada'"):
        revoke_token(store, "ada", who="human:root")
    again, secret = create_token(store, "ada", "admin", who="human:root")  # the name is free
    assert again.id != first.id and authenticate(store, secret).role is Role.ADMIN  # type: ignore[union-attr]
    assert len(store.store_events()) == 3 and verify_store(store).ok
    for bad in ("nobody", "ada b"):
        with pytest.raises(UsageError):
            create_token(store, bad if bad != "nobody" else "ok", "root", who="human:root")
    assert len(store.store_events()) == 3


def test_two_creating_the_same_name_at_once_get_one_token(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    results: list[object] = []
    start = threading.Barrier(4)

    def make() -> None:
        s = SQLiteStore(db)  # each its own connection, as separate processes would
        start.wait()
        try:
            results.append(create_token(s, "ada", "operator", who="human:root"))
        except UsageError as exc:
            results.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    made = [r for r in results if isinstance(r, tuple)]
    assert len(made) == 1 and len(results) == 4
    store = SQLiteStore(db)
    assert len(store.tokens()) == 1 and len(store.store_events()) == 1
    assert verify_store(store).ok


@pytest.mark.parametrize(("sql", "named"), [
    ("UPDATE tokens SET role = 'admin'", "role: stored admin, the store chain says viewer"),
    ("UPDATE tokens SET hash = x'{forged}' WHERE name = 'ada'", "hash: stored"),
    ("UPDATE tokens SET name = 'bob'", "name: stored bob, the store chain says ada"),
    ("UPDATE tokens SET revoked = NULL, revoked_by = NULL WHERE name = 'cy'",
     "revoked: stored None, the store chain says"),
    ("DELETE FROM tokens WHERE name = 'ada'", "its row is missing"),
    ("INSERT INTO tokens VALUES('01GHOST', 'eve', 'admin', x'{forged}', "
     "'2026-01-01T00:00:00Z', 'human:eve', NULL, NULL)", "no store event created it"),
    ("UPDATE tokens SET role = 'root' WHERE name = 'ada'", "none of viewer, operator, admin"),
])
def test_a_token_row_changed_outside_the_chain_is_named(tmp_path: Path, sql: str,
                                                        named: str) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    create_token(store, "ada", "viewer", who="human:root")
    create_token(store, "cy", "operator", who="human:root")
    revoke_token(store, "cy", who="human:root")
    assert verify_store(store).ok
    forged = hashlib.sha256(b"tth_known").hexdigest()
    with sqlite3.connect(db) as c:
        c.execute(sql.format(forged=forged))
    rep = verify_store(store)
    assert not rep.ok and any(named in p for p in rep.problems), rep.problems
    who = "eve" if "eve" in sql else "cy" if "cy" in sql else "ada"
    assert any(f"token '{who}'" in p for p in rep.problems), rep.problems
