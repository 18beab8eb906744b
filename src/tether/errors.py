"""One exception tree for tether.

    TetherError
    ├── UsageError                  the caller asked for something wrong; fix the input
    │   ├── NotFound                unknown run, effect, event or step
    │   ├── InvalidState            state that is not JSON-serialisable (names key and step)
    │   ├── InvalidTranscript       a transcript to import or analyze (names record and field)
    │   └── ToolDefinitionError     a tool whose signature cannot be turned into a schema
    ├── StoreError                  the journal cannot be used as asked
    │   ├── StoreLocked             another process holds the write lock too long
    │   ├── StoreCorrupt            the file is not a tether store, or is damaged
    │   ├── SchemaTooNew            written by a newer tether; upgrade tether
    │   ├── StorageError            the disk or file system under the store failed
    │   │   └── StorageFull         no space left where the store lives
    │   ├── LeaseLost               this process no longer owns the run (fenced off)
    │   └── Unstorable              a write holds a value this store cannot keep (names run, field)
    ├── VerificationFailed          a proof, signature or signed checkpoint does not verify
    ├── ModelError                  a model provider failed after retries (pauses the run)
    └── ToolFailed                  a tool raised; the model is told, the loop goes on
        ├── ToolDenied              the tool was not run: a policy or a person said no
        └── EffectInDoubt           a tool cannot tell whether its effect happened (in doubt)

    Signal (a BaseException)        control flow, not failures
    ├── PauseRequested              the run must pause (command, budget, nondeterminism)
    │   ├── BudgetExceeded          a budget cap or window is exhausted
    │   └── AwaitApproval           a proposed action waits for a human decision
    ├── Deferred                    a policy holds the action until a window ends
    └── StopRequested               the run must stop now

Signals derive from BaseException, like asyncio.CancelledError, so that an
agent's ``except Exception`` cannot swallow a pause for an in-doubt effect and
carry on as if nothing happened.

Every message names the run, step, effect or event it is about and says how to
fix it, so an operator reading a log at 3 a.m. knows what to do next.
"""

from __future__ import annotations


class TetherError(Exception):
    """Base of every error tether raises on purpose."""


class UsageError(TetherError):
    """The caller asked for something wrong; the message says how to fix it."""


class NotFound(UsageError):
    """An unknown run, effect, event or step id."""


class InvalidState(UsageError):
    """A run's state cannot be checkpointed (not JSON-serialisable)."""


class InvalidTranscript(UsageError):
    """A transcript (``tether import``, ``tether analyze``) that cannot be read as one: the
    message names the record (its 0-based position in the file) and the field."""

    def __init__(self, record: int | None, field: str, problem: str) -> None:
        self.record, self.field, self.problem = record, field, problem
        where = "the file" if record is None else f"record {record}"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class ToolDefinitionError(UsageError):
    """A tool cannot be registered as declared."""


class StoreError(TetherError):
    """The journal cannot be used as asked."""


class StoreLocked(StoreError):
    """The store's write lock was held by another process for too long."""


class StoreMissing(StoreError):
    """No tether store where one was named, and the command does not create one."""


class StoreCorrupt(StoreError):
    """The file is not a tether store, or it is damaged."""


class SchemaTooNew(StoreError):
    """The store was written by a newer version of tether."""


class StorageError(StoreError):
    """The disk or file system under the store failed (I/O error, read-only, cannot open).

    Nothing committed is lost: the transaction that hit it rolled back. A worker
    leaves its runs as they were and tries again later, with backoff.
    """


class StorageFull(StorageError):
    """No space is left on the file system that holds the store."""


class LeaseLost(StoreError):
    """This process no longer owns the run; its writes are refused (fencing)."""


class Unstorable(StoreError):
    """A write holds a value this store cannot keep (text with a NUL character, which
    PostgreSQL's text refuses): the store refuses that write alone, naming its run and the
    field, and nothing of it is written. Trying again cannot help, so a worker fails the run
    with this message (from what its journal held before the write) instead of retrying."""


class Conflict(StoreError):
    """A conditional change found a row in another state than expected (e.g. a message
    its recipient took meanwhile); nothing of the write was applied."""


class VerificationFailed(TetherError):
    """A Merkle proof, a signed note or a signed checkpoint does not verify (or cannot be
    read as one): the message says which and why."""


class ModelError(TetherError):
    """A model call failed after its retries.

    Attributes:
        provider_message: what the provider said, shown to the operator.
        retryable: whether trying again later may succeed.
    """

    def __init__(self, message: str, *, provider_message: str = "", retryable: bool = True):
        super().__init__(message)
        self.provider_message = provider_message
        self.retryable = retryable


class ToolFailed(TetherError):
    """A tool raised. The model is told; the loop goes on."""


class ToolDenied(ToolFailed):
    """The tool was not run: a policy rule denied it, or its approval was denied, expired
    or cancelled. A ``ToolFailed`` (callers that catch that are unchanged): the model is
    told the same way; catch this one to tell a refusal from a tool that raised."""


class EffectInDoubt(ToolFailed):
    """Raised by a tool that cannot tell whether its effect happened: the request left, the
    answer never came (a connection dropped mid-call, a remote server died, a timeout after
    sending). For an effect, tether journals ``effect.in_doubt`` and pauses the run for a
    person (``tether resolve``), exactly as after a crash between intent and result: the
    effect is neither reported as failed (the model might do it again) nor repeated. From a
    read tool it is an ordinary failure (the model is told)."""


class Signal(BaseException):
    """Control flow raised through user code; never a failure of the run."""


class PauseRequested(Signal):
    """The run must pause at this point (operator, budget, nondeterminism, in-doubt effect)."""

    def __init__(self, reason: str, *, detail: dict[str, object] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or {}


class StopRequested(Signal):
    """The run must stop now."""


class AwaitApproval(PauseRequested):
    """The run waits for a human to approve or deny a proposed action."""


class Deferred(Signal):
    """A policy holds the action until a time window ends; the run sleeps until then."""

    def __init__(self, reason: str, *, until: float):
        super().__init__(reason)
        self.reason = reason
        self.until = until


class BudgetExceeded(PauseRequested):
    """A budget cap or rolling window is exhausted; the run pauses until raised."""
