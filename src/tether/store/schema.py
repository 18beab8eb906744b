"""Versioned schema migrations of the SQLite store.

Each migration is applied once, in order, inside one transaction, and the
store records its version in ``meta``. A store whose version is newer than
this code knows is refused (SchemaTooNew) rather than misread.
"""

from __future__ import annotations

from typing import Final

RARE_KINDS: Final = ("alert", "alert.acked", "run.paused", "run.resumed", "run.stopped",
                     "run.quarantined", "run.released")
"""Event kinds indexed by the partial index ``events_rare`` of migration 10 (a run has few
of them), which names them literally: a migration never changes once written. A query
reaches it only with the same term in its WHERE clause (``RARE_SQL``)."""
RARE_SQL: Final = ", ".join(f"'{k}'" for k in RARE_KINDS)

# Space and pages written per commit matter (an always-on run writes a few rows a
# step for weeks, and a group commit of a hundred runs should touch few pages):
# * events and checkpoints are rowid tables, so concurrent runs append to the same
#   pages, with narrow indexes for lookups; runs are named there by a small integer
#   key (run_keys), not their 26-character id;
# * rows hold nothing derivable: an event's payload hash is stored only once its
#   payload is erased (otherwise it is the hash of the stored bytes), and a batch's
#   link to its predecessor is the previous row's hash; an event's time is kept as
#   integer microseconds and its id as the 16 bytes of the ULID, both given back
#   in their exact text form.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the journal, its projections, leases, commands and checkpoints.
    """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE run_keys(rk INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE);
    CREATE TABLE events(
        rk INTEGER NOT NULL, seq INTEGER NOT NULL, id BLOB NOT NULL, epoch INTEGER NOT NULL,
        step INTEGER NOT NULL, kind TEXT NOT NULL, time INTEGER NOT NULL, actor TEXT NOT NULL,
        causes TEXT NOT NULL, payload BLOB, payload_hash BLOB, hash BLOB NOT NULL);
    CREATE UNIQUE INDEX events_seq ON events(rk, seq);
    CREATE UNIQUE INDEX events_id ON events(id);
    CREATE TABLE batches(n INTEGER PRIMARY KEY, hash BLOB NOT NULL, entries BLOB NOT NULL);
    CREATE TABLE runs(
        id TEXT PRIMARY KEY, name TEXT NOT NULL, agent TEXT NOT NULL, swarm TEXT,
        goal TEXT NOT NULL, status TEXT NOT NULL, epoch INTEGER NOT NULL, step INTEGER NOT NULL,
        seq INTEGER NOT NULL, head TEXT NOT NULL, spec BLOB NOT NULL, budget BLOB NOT NULL,
        usage BLOB NOT NULL, wake_at REAL, created REAL NOT NULL, updated REAL NOT NULL,
        reason TEXT NOT NULL DEFAULT '', parent TEXT) WITHOUT ROWID;
    CREATE INDEX runs_status ON runs(status, wake_at);
    CREATE INDEX runs_name ON runs(name);
    CREATE TABLE leases(run TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL,
        expires REAL NOT NULL) WITHOUT ROWID;
    CREATE TABLE effects(
        id TEXT PRIMARY KEY, run TEXT NOT NULL, epoch INTEGER NOT NULL, step INTEGER NOT NULL,
        idx INTEGER NOT NULL, tool TEXT NOT NULL, effect TEXT NOT NULL, idempotent INTEGER NOT NULL,
        key TEXT NOT NULL, status TEXT NOT NULL, arguments BLOB NOT NULL, result BLOB,
        undo BLOB, updated REAL NOT NULL) WITHOUT ROWID;
    CREATE INDEX effects_run ON effects(run, status);
    CREATE TABLE checkpoints(rk INTEGER NOT NULL, epoch INTEGER NOT NULL, step INTEGER NOT NULL,
        kind TEXT NOT NULL, body BLOB NOT NULL);
    CREATE UNIQUE INDEX checkpoints_step ON checkpoints(rk, epoch, step);
    CREATE TABLE chunks(hash TEXT NOT NULL, body BLOB NOT NULL);
    CREATE UNIQUE INDEX chunks_hash ON chunks(hash);
    CREATE TABLE commands(id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL,
        kind TEXT NOT NULL, args BLOB NOT NULL, actor TEXT NOT NULL, created REAL NOT NULL,
        applied REAL);
    CREATE INDEX commands_pending ON commands(applied, run);
    CREATE TABLE usage(run TEXT NOT NULL, bucket INTEGER NOT NULL, swarm TEXT,
        steps REAL NOT NULL DEFAULT 0, input_tokens REAL NOT NULL DEFAULT 0,
        output_tokens REAL NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,
        tool_calls REAL NOT NULL DEFAULT 0, wall_seconds REAL NOT NULL DEFAULT 0,
        PRIMARY KEY(run, bucket)) WITHOUT ROWID;
    CREATE INDEX usage_swarm ON usage(swarm, bucket);
    CREATE TABLE swarms(name TEXT PRIMARY KEY, budget BLOB NOT NULL, updated REAL NOT NULL)
        WITHOUT ROWID;
    """,
    # 2: approvals (a projection of approval.* events), the notification outbox, and
    #    pause points shared by a swarm.
    """
    CREATE TABLE approvals(
        id TEXT PRIMARY KEY, run TEXT NOT NULL, epoch INTEGER NOT NULL, step INTEGER NOT NULL,
        idx INTEGER NOT NULL, tool TEXT NOT NULL, effect TEXT NOT NULL, arguments BLOB NOT NULL,
        rule TEXT, reason TEXT NOT NULL, policy_hash TEXT NOT NULL, approvers BLOB NOT NULL,
        requested_at REAL NOT NULL, expires_at REAL, on_expiry TEXT NOT NULL,
        status TEXT NOT NULL, decided_by TEXT, decided_at REAL, note TEXT,
        edited_arguments BLOB, always INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
    CREATE INDEX approvals_status ON approvals(status, expires_at);
    CREATE INDEX approvals_run ON approvals(run, status);
    CREATE TABLE outbox(
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL, created REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, delivered REAL,
        last_error TEXT) WITHOUT ROWID;
    CREATE INDEX outbox_due ON outbox(delivered, next_at);
    ALTER TABLE swarms ADD COLUMN pause_points BLOB;
    """,
    # 3: a swarm's shared world and its provenance. messages: ctx.send's mail, keyed by the
    #    message.sent event; versions: every attributed write to a named thing (a blackboard
    #    key, a workspace file), in commit order; links: cross-run causes (and epoch and
    #    fork lineage) indexed by their source step, which is what impact walks.
    """
    CREATE TABLE messages(
        id TEXT PRIMARY KEY, swarm TEXT, sender TEXT NOT NULL, epoch INTEGER NOT NULL,
        step INTEGER NOT NULL, recipient TEXT NOT NULL, topic TEXT, body BLOB NOT NULL,
        status TEXT NOT NULL, created REAL NOT NULL, claim TEXT, received REAL) WITHOUT ROWID;
    CREATE INDEX messages_inbox ON messages(recipient, status);
    CREATE INDEX messages_sender ON messages(sender, epoch, step);
    CREATE TABLE versions(
        n INTEGER PRIMARY KEY, ns TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
        event TEXT NOT NULL, run TEXT NOT NULL, epoch INTEGER NOT NULL, step INTEGER NOT NULL,
        value BLOB, hash TEXT, status TEXT NOT NULL, suspect INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL);
    CREATE UNIQUE INDEX versions_key ON versions(ns, key, version);
    CREATE INDEX versions_run ON versions(run, epoch, step);
    CREATE INDEX versions_event ON versions(event);
    CREATE TABLE links(
        src_rk INTEGER NOT NULL, src_epoch INTEGER NOT NULL, src_step INTEGER NOT NULL,
        src_event BLOB NOT NULL, dst_rk INTEGER NOT NULL, dst_epoch INTEGER NOT NULL,
        dst_step INTEGER NOT NULL, dst_event BLOB NOT NULL, kind TEXT NOT NULL);
    CREATE INDEX links_src ON links(src_rk, src_epoch, src_step);
    CREATE INDEX links_dst ON links(dst_rk, dst_epoch, dst_step);
    """,
    # 4: listing what a run did from a step on (impact) without visiting each row: the
    #    indexes hold every column the listing prints, in step order.
    """
    CREATE INDEX effects_step ON effects(run, epoch, step, idx, tool, effect, status);
    DROP INDEX versions_run;
    CREATE INDEX versions_run ON versions(run, epoch, step, ns, key, version, status, event,
        suspect);
    """,
    # 5: the store chain (core/settings.py): operator settings such as the policy in force,
    #    hash-chained apart from any run; a store made before it has an empty chain.
    """
    CREATE TABLE store_events(
        n INTEGER PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, scope TEXT NOT NULL,
        time TEXT NOT NULL, actor TEXT NOT NULL, payload BLOB NOT NULL, hash BLOB NOT NULL);
    """,
    # 6: an event's seal (hashes of the rows it made, chained with it, kept when its payload
    #    is erased; see tether.core.seals). NULL for events that make no rows and for every
    #    event written before: those hash as they always did.
    """
    ALTER TABLE events ADD COLUMN seal BLOB;
    """,
    # 7: a swarm's budget and pause points join the store chain (swarm.budget,
    #    swarm.pause_points events; the swarms rows become their projection). No SQL: the
    #    store journals the rows an older store holds, in the same transaction
    #    (SQLiteSettings._migrated), so verify can hold every row to the chain from then on.
    "",
    # 8: operators' questions by time window (tether audit query, tether report): an index on
    #    the events' time (the run's clock), so a night's events are read without a scan.
    """
    CREATE INDEX events_time ON events(time);
    """,
    # 9: the key of the keyed hash that fingerprints a call whose arguments held a secret
    #    (tether.core.redaction.keyed_digest): made once per store, never journaled.
    """
    INSERT OR IGNORE INTO meta VALUES('x.fingerprint_key', lower(hex(randomblob(32))));
    """,
    # 10: a run's monitor verdicts and what answered them, read in one probe when a worker
    #    takes the run (escalation stages, verdicts not acted on yet): a partial index, so
    #    the events of every other kind (nearly all of them) cost nothing more to insert.
    #    A command may carry a key that makes queueing it idempotent (a monitor's order to
    #    an upstream run, keyed by its alert, is queued again after a crash; the orders
    #    queued before get their key here, so none is queued twice). A message
    #    may be suspect (its sender was under a monitor's verdict when it was undelivered).
    """
    CREATE INDEX events_rare ON events(rk, seq) WHERE kind IN ('alert', 'alert.acked',
        'run.paused', 'run.resumed', 'run.stopped', 'run.quarantined', 'run.released');
    ALTER TABLE commands ADD COLUMN key TEXT;
    UPDATE commands SET key = 'alert:' || json_extract(CAST(args AS TEXT), '$.alert')
        WHERE actor = 'system:monitor' AND json_extract(CAST(args AS TEXT), '$.alert')
        IS NOT NULL;
    ALTER TABLE messages ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX commands_key ON commands(key) WHERE key IS NOT NULL;
    """,
    # 11: signed checkpoints (tether audit seal): each a C2SP signed note over the Merkle root
    #     of every event's hash in commit order (the order the batch chain names them), with
    #     the consistency proof from the checkpoint before it. A store made before has none.
    """
    CREATE TABLE signed_checkpoints(
        n INTEGER PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL,
        proof BLOB NOT NULL, created REAL NOT NULL);
    """,
    # 12: API tokens (tether ui token): the projection of the store chain's token.created and
    #     token.revoked events, written in the same transaction. Only the secret's SHA-256 is
    #     kept; a name names one valid token at a time (a revoked one's name may be reused).
    """
    CREATE TABLE tokens(
        id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, hash BLOB NOT NULL UNIQUE,
        created TEXT NOT NULL, created_by TEXT NOT NULL, revoked TEXT, revoked_by TEXT)
        WITHOUT ROWID;
    CREATE UNIQUE INDEX tokens_name ON tokens(name) WHERE revoked IS NULL;
    """,
    # 13: a cache beside each signed checkpoint so the next seal hashes only the events
    #     since: the last batch it covers, that batch's hash, and the tree's frontier (the
    #     perfect subtrees tiling it). NULL (older rows): the next seal reads every event.
    """
    ALTER TABLE signed_checkpoints ADD COLUMN batch INTEGER;
    ALTER TABLE signed_checkpoints ADD COLUMN batch_hash BLOB;
    ALTER TABLE signed_checkpoints ADD COLUMN frontier BLOB;
    """,
)

SWARMS_JOURNALED: Final = 7
"""The schema version from which every swarm row is the projection of store events."""

VERSION: Final = len(MIGRATIONS)
