"""Webhook notifications for operators, delivered from the store's durable outbox.

The runtime queues a :class:`~tether.store.records.Notification` in the same
transaction as the event behind it (approval requested, run paused or stopped,
budget exceeded, effect in doubt, run failed), and :func:`queue_expiring` adds
one for approvals about to expire. A :class:`Notifier` posts what is due to one
webhook and records every attempt in the outbox, so delivery survives restarts.

What a receiver gets::

    POST <url>
    Content-Type: application/json
    User-Agent: tether/0.1.0
    X-Tether-Notification: 01J8...
    X-Tether-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed by the secret>

    {"agent": "...", "id": "01J8...", "kind": "run.paused", "name": "...",
     "notification_id": "01J8...", "payload": {...}, "run": "...", "step": 3,
     "swarm": null, "time": "2025-01-01T03:00:00.000000Z"}

and how it checks the signature before trusting the body::

    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    hmac.compare_digest(request.headers["X-Tether-Signature"], expected)

Delivery is at least once: a reply lost after the receiver got the request
means the request comes again, so receivers drop duplicates by the
``X-Tether-Notification`` header (the body's ``notification_id``). Order is not
guaranteed. A 2xx reply delivers; anything else (another status, a redirect, a
refused connection, a timeout) is recorded as the row's ``last_error`` and tried
again after an exponential backoff with jitter. After ``max_attempts`` the
notifier gives up: the row keeps its error, and its ``next_at`` becomes
:data:`GAVE_UP_AT` (9999-12-31), so it is never due again yet stays in the
outbox for an operator to see. A webhook never blocks or crashes a run: posts
run on the notifier's own threads, and failures are logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import http.client
import logging
import os
import random
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from tether._version import __version__
from tether.core.backoff import Backoff
from tether.core.canonical import dumps
from tether.core.ids import iso
from tether.errors import UsageError
from tether.store.protocol import Store
from tether.store.records import Notification
from tether.system_clock import SYSTEM_CLOCK

log = logging.getLogger("tether.notify")

T = TypeVar("T")

EXPIRING: Final = "approval.expiring"
"""Kind of the notification :func:`queue_expiring` queues."""
GAVE_UP_AT: Final = 253402300799.0
"""``next_at`` of a notification the notifier gave up on (9999-12-31T23:59:59Z): never due."""
BATCH: Final = 100
"""Notifications read from the outbox at a time."""


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where and how to deliver notifications.

    Example:
        >>> WebhookConfig("https://ops.example.com/tether", secret="s3cret", kinds=frozenset(
        ...     {"approval.requested", "approval.expiring"}))  # doctest: +SKIP
    """

    url: str
    """An ``http://`` or ``https://`` URL that receives a POST per notification."""
    secret: str = field(repr=False)
    """Shared secret keying the HMAC-SHA256 signature (its UTF-8 bytes)."""
    timeout: float = 5.0
    """Seconds to connect, and to wait for each read of the reply."""
    max_attempts: int = 12
    """Attempts before giving up on a notification (see :data:`GAVE_UP_AT`)."""
    backoff_base: float = 1.0
    """Seconds to wait after the first failure; doubled after each further one."""
    backoff_max: float = 600.0
    """The longest wait between two attempts."""
    kinds: frozenset[str] | None = None
    """Kinds to send (None: all); the others are marked not sent, never posted."""
    expiring_within: float = 900.0
    """:meth:`Notifier.run` queues ``approval.expiring`` this many seconds before expiry."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"webhook URL {self.url!r} must be http:// or https:// with a host, "
                             "e.g. https://ops.example.com/tether")
        if not self.secret:
            raise UsageError("the webhook secret is empty; set a long random shared secret so "
                             "receivers can check the X-Tether-Signature header")
        if not self.timeout > 0:
            raise UsageError(f"webhook timeout must be a positive number of seconds, "
                             f"not {self.timeout}")
        if self.max_attempts < 1:
            raise UsageError(f"webhook max_attempts must be at least 1, not {self.max_attempts}")
        if not 0 <= self.backoff_base <= self.backoff_max:
            raise UsageError(f"webhook backoff needs 0 <= backoff_base <= backoff_max, not "
                             f"{self.backoff_base} and {self.backoff_max}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookConfig | None:
        """Read ``TETHER_WEBHOOK_URL`` and ``TETHER_WEBHOOK_SECRET`` (None without a URL).

        Raises:
            UsageError: a URL without a secret, or a URL that is not http(s).
        """
        env = os.environ if environ is None else environ
        url = env.get("TETHER_WEBHOOK_URL", "").strip()
        if not url:
            return None
        secret = env.get("TETHER_WEBHOOK_SECRET", "")
        if not secret:
            raise UsageError("TETHER_WEBHOOK_URL is set but TETHER_WEBHOOK_SECRET is not: set the "
                             "shared secret that signs each notification (X-Tether-Signature), "
                             "or unset TETHER_WEBHOOK_URL to send no notifications")
        return cls(url=url, secret=secret)


# -- the pure core: what to send, and what an attempt comes to ---------------------------------
@dataclass(frozen=True, slots=True)
class Mark:
    """What to record after one attempt: the arguments of ``Store.outbox_mark``."""

    delivered: float | None
    """When it was delivered (None: not delivered)."""
    next_at: float | None = None
    """When to try again (:data:`GAVE_UP_AT`: never)."""
    error: str | None = None
    """Why the attempt failed, kept as the row's ``last_error``."""


def encode(note: Notification) -> bytes:
    """The request body: the notification's body plus its ``notification_id``."""
    return dumps({**note.body, "notification_id": note.id})


def signature(secret: str, body: bytes) -> str:
    """The ``X-Tether-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request_headers(config: WebhookConfig, note_id: str, body: bytes) -> dict[str, str]:
    """Headers of the POST for one notification."""
    return {"Content-Type": "application/json", "User-Agent": f"tether/{__version__}",
            "X-Tether-Notification": note_id,
            "X-Tether-Signature": signature(config.secret, body)}


def backoff(failures: int, config: WebhookConfig, jitter: float) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1-based).

    ``backoff_base`` doubled per failure, capped at ``backoff_max``; ``jitter``
    (in [0, 1)) spreads the wait over its upper half, so receivers that come back
    are not hit by every notifier at once, yet the wait still grows.
    """
    return Backoff(base=config.backoff_base, cap=config.backoff_max).delay(failures - 1, jitter)


def decide(note: Notification, error: str | None, *, now: float, config: WebhookConfig,
           jitter: float) -> Mark:
    """What an attempt comes to: delivered, tried again later, or given up on."""
    if error is None:
        return Mark(delivered=now)
    attempt = note.attempts + 1
    if attempt >= config.max_attempts:
        return Mark(None, GAVE_UP_AT, f"gave up after {attempt} attempts; last: {error}")
    return Mark(None, now + backoff(attempt, config, jitter), error)


def skip(note: Notification) -> Mark:
    """The mark of a notification whose kind the webhook does not take."""
    return Mark(None, GAVE_UP_AT, f"not sent: the webhook takes no {note.kind} notifications")


def wanted(config: WebhookConfig, kind: str) -> bool:
    return config.kinds is None or kind in config.kinds


# -- the edge: one POST ------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected webhook is misconfigured: following it would re-send (or drop) the
    # signed body somewhere else. Returning None makes urllib raise the 3xx as an error.
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect())


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> str | None:
    """POST ``body`` once. None on a 2xx reply, otherwise why not; never raises."""
    # The scheme is checked by WebhookConfig: only http(s), never file: or ftp:.
    req = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    try:
        # A 2xx status delivers; the reply's body is not read (only closed).
        with _OPENER.open(req, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:  # any status but 2xx
        exc.close()
        return f"HTTP {exc.code} {exc.reason}".strip()
    except urllib.error.URLError as exc:
        return _describe(exc.reason, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return _describe(exc, timeout)


def _describe(reason: object, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"no reply within {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    return text[:500]


# -- the notifier ------------------------------------------------------------------------------
class Notifier:
    """Delivers due notifications from a store's outbox to one webhook.

    Args:
        store: the store whose outbox to drain.
        config: the webhook.
        clock: wall-clock seconds (inject one to make retries due without waiting).
        sleep: how :meth:`run` waits between rounds.
        parallel: posts in flight at once, on the notifier's own threads (never the
            event loop's default executor, which runs' tools and steps use).

    Example:
        >>> stop = asyncio.Event()
        >>> task = asyncio.create_task(Notifier(store, config).run(stop))  # doctest: +SKIP
    """

    def __init__(self, store: Store, config: WebhookConfig, *,
                 clock: Callable[[], float] = SYSTEM_CLOCK.now,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 parallel: int = 4) -> None:
        if parallel < 1:
            raise UsageError(f"parallel must be at least 1, not {parallel}")
        self.store = store
        self.config = config
        self.clock = clock
        self._sleep = sleep
        self._parallel = parallel
        self._pool: ThreadPoolExecutor | None = None
        self._jitter: Callable[[], float] = random.random

    async def deliver_due(self) -> int:
        """Attempt every due notification once; return how many were delivered.

        Never raises for a failing webhook or store: failures are recorded in the
        outbox when possible and logged as warnings.
        """
        seen: set[str] = set()
        delivered = 0
        while True:
            try:
                batch = await self._call(self.store.outbox_due, self.clock(), BATCH)
            except Exception as exc:  # e.g. the store is locked: try again next round
                log.warning("notifications: reading the outbox of %s failed (%s); will retry",
                            self.store.url, exc)
                return delivered
            fresh = [n for n in batch if n.id not in seen]
            seen.update(n.id for n in fresh)
            delivered += sum(await asyncio.gather(*(self._attempt(n) for n in fresh)))
            if not fresh or len(batch) < BATCH:
                return delivered

    async def queue_expiring(self) -> list[Notification]:
        """:func:`queue_expiring` for this notifier's store and clock (never raises)."""
        if not wanted(self.config, EXPIRING):
            return []
        try:
            return await self._call(queue_expiring, self.store, within=self.config.expiring_within,
                                    now=self.clock())
        except Exception as exc:
            log.warning("notifications: queueing expiring approvals failed (%s); will retry", exc)
            return []

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Queue expiring approvals and deliver what is due, every ``interval`` s, until ``stop``.

        A round in progress when ``stop`` is set finishes first (a post lasts at most
        about ``timeout``); cancel the task to end at once, leaving posts in flight
        unrecorded, so they are sent again later (receivers drop duplicates).
        """
        try:
            while not stop.is_set():
                await self.queue_expiring()
                await self.deliver_due()
                await self._nap(stop, interval)
        finally:
            self.close()

    def close(self) -> None:
        """Release the notifier's threads (a post in flight ends by its timeout)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _attempt(self, note: Notification) -> bool:
        cfg = self.config
        try:
            if wanted(cfg, note.kind):
                body = encode(note)
                error = await self._call(post, cfg.url, body, request_headers(cfg, note.id, body),
                                         cfg.timeout)
                mark = decide(note, error, now=self.clock(), config=cfg, jitter=self._jitter())
            else:
                mark = skip(note)
            await self._call(self.store.outbox_mark, note.id, delivered=mark.delivered,
                             next_at=mark.next_at, error=mark.error)
        except Exception as exc:  # unmarked, so due again: sent again, dropped as a duplicate
            log.warning("notification %s (%s): %s; will retry", note.id, note.kind, exc)
            return False
        if mark.error is not None and wanted(cfg, note.kind):
            host = urlsplit(cfg.url).hostname  # not the URL: its path or query may hold a token
            when = ("giving up" if mark.next_at == GAVE_UP_AT
                    else f"next attempt in {(mark.next_at or 0) - self.clock():.1f}s")
            log.warning("notification %s (%s) to %s failed, attempt %d of %d: %s; %s", note.id,
                        note.kind, host, note.attempts + 1, cfg.max_attempts, mark.error, when)
        return mark.delivered is not None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._parallel, thread_name_prefix="tether-notify")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _nap(self, stop: asyncio.Event, seconds: float) -> None:
        # Wake at once when stopped, so a worker's shutdown never waits a whole interval.
        tasks = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._sleep(seconds))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t


def queue_expiring(store: Store, *, within: float, now: float) -> list[Notification]:
    """Queue ``approval.expiring`` for pending approvals that expire within ``within`` seconds.

    Each approval's notification has the id ``"<approval id>:expiring"``, and the
    store ignores an id it already holds, so it is queued once however often this
    runs. Approvals already past their time are left to expiry.

    Returns:
        The notifications offered to the outbox (including any already there).
    """
    notes = []
    for a in store.approvals(status="pending", expired_by=now + within):
        if a.expires_at is None or a.expires_at <= now:
            continue
        run = store.get_run(a.run)
        payload = {**a.to_json(), "expires_in": a.expires_at - now}
        nid = f"{a.id}:expiring"
        notes.append(Notification(nid, EXPIRING, {
            "id": nid, "kind": EXPIRING, "run": a.run, "name": run.name if run else None,
            "agent": run.agent if run else None, "swarm": run.swarm if run else None,
            "step": a.step, "time": iso(now), "payload": payload}, now))
    if notes:
        store.notify(notes)
    return notes


__all__ = ["EXPIRING", "GAVE_UP_AT", "Notifier", "WebhookConfig", "queue_expiring"]
