"""Tools: functions an agent may call, each with an effect class.

``read`` tools change nothing; ``reversible`` tools register their own undo
while they run (:func:`register_undo`); ``irreversible`` tools cannot be
undone. A tool that declares nothing is irreversible: the safe assumption.
An ``idempotent`` tool may be retried after a crash with the same idempotency
key (:func:`current`), which it should pass on to the system it changes.

The argument schema comes from the signature and type hints through pydantic,
which also validates what a model sends before anything runs.

A non-idempotent tool can still settle itself after a crash: its ``prepare`` hook
works out, before the intent is journaled, what the world looks like now and what it
will look like once the tool is done (journaled in the intent as ``prepared``); its
``settle`` hook, called when the intent has no result, compares the world with that
and says ``done``, ``not_done`` (run it again) or ``unknown`` (a human decides). The
built-in file tools use them (:mod:`tether.tools.fssettle`).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import pydantic

from tether.core.effect_classes import TOOL_EFFECTS, Effect
from tether.core.text import NUL, nul_problem
from tether.errors import ToolDefinitionError, UsageError


@dataclass(frozen=True, slots=True)
class Undo:
    """The compensating call a reversible tool registered: itself a tool call."""

    tool: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class ToolContext:
    """What a running tool can see: who calls it and where it may act."""

    run: str
    step: int
    effect_id: str | None
    """Id of the ``effect.intent`` event (None for read tools)."""
    idempotency_key: str | None
    """Stable across retries of the same effect; pass it to the system you change."""
    workspace: Path | None
    """Root the built-in file tools are confined to."""
    undo: Undo | None = None
    after: dict[str, Any] = field(default_factory=dict)
    """Extra facts a tool records in its result event (e.g. after-image hashes)."""
    touched: list[str] = field(default_factory=list)
    """Workspace paths the call read or changed: their last writers become its causes."""
    chunks: dict[str, bytes] = field(default_factory=dict)
    """Large blobs the registered undo names by SHA-256 hex (rather than carrying them),
    committed with the call's result, stored once however many events name them."""
    chunk: Callable[[str], bytes] | None = None
    """Reads a stored chunk back (an undo resolving what it names); None outside a store."""


@dataclass(frozen=True, slots=True)
class IntentInput:
    """What a tool's ``prepare`` hook sees: a call whose intent is about to be journaled."""

    run: str
    step: int
    tool: str
    arguments: dict[str, Any]
    workspace: Path | None


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a ``prepare`` hook returns."""

    facts: dict[str, Any]
    """JSON journaled in the intent's ``prepared`` field; given back to ``settle``."""
    chunks: dict[str, bytes] = field(default_factory=dict)
    """Large blobs stored beside the intent, content-addressed (SHA-256 hex -> bytes),
    committed with it; ``settle`` reads them back with :attr:`SettleInput.chunk`."""


Settlement = Literal["done", "not_done", "unknown"]


@dataclass(frozen=True, slots=True)
class SettleInput:
    """What a tool's ``settle`` hook sees: an effect whose intent has no result."""

    run: str
    step: int
    effect_id: str
    tool: str
    arguments: dict[str, Any]
    prepared: dict[str, Any]
    """The ``prepared`` facts of the intent (the hook is only called when there are some)."""
    workspace: Path | None
    chunk: Callable[[str], bytes]
    """Reads back a chunk :class:`Prepared` stored."""


@dataclass(frozen=True, slots=True)
class Settled:
    """A ``settle`` hook's verdict on an effect left without a result."""

    outcome: Settlement
    """``done``: it happened; ``not_done``: it did not, run it again; ``unknown``: a human
    decides (the effect stays in doubt)."""
    reason: str
    """One line for the journal: what the hook saw."""
    result: Any = None
    """With ``done``: what the step gets back (what the tool would have returned)."""
    undo: Undo | None = None
    """With ``done``: the undo the tool would have registered."""
    after: dict[str, Any] = field(default_factory=dict)
    """With ``done``: the facts it would have recorded (:func:`record_after`)."""


_current: contextvars.ContextVar[ToolContext] = contextvars.ContextVar("tether_tool_context")


def current() -> ToolContext:
    """The context of the tool call in progress.

    Raises:
        UsageError: outside a tool call run by tether.
    """
    try:
        return _current.get()
    except LookupError:
        raise UsageError("tether.tools.current() was called outside a tool call run by tether; "
                         "call the tool through ctx.call(...) or an agent") from None


def register_undo(tool: Tool | str, **arguments: Any) -> None:
    """Register how to undo the effect of the reversible tool now running.

    The arguments carry the before-image, so the undo needs nothing else.
    """
    ctx = current()
    name = tool if isinstance(tool, str) else tool.name
    ctx.undo = Undo(name, dict(arguments))


def record_after(**facts: Any) -> None:
    """Record facts about the world after this effect (kept in ``effect.done``)."""
    current().after.update(facts)


def record_touch(*paths: str) -> None:
    """Name workspace paths (relative to the workspace) this call read or changed.

    The event of the call then cites, among its causes, the effect of another run
    that last wrote each path: that is how provenance follows files.

    Raises:
        UsageError: a path that is not valid Unicode (a file name that is not UTF-8):
            the journal cannot name it, so the call fails (the model is told) rather
            than the run, when the store would refuse it later.
    """
    for p in paths:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"path {p!r} is not valid Unicode (a lone surrogate); the "
                             "journal names files in UTF-8 only") from None
    current().touched.extend(paths)


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable an agent may use, with its effect class and argument schema."""

    name: str
    fn: Callable[..., Any]
    effect: Effect
    idempotent: bool
    description: str
    schema: dict[str, Any]
    model: type[pydantic.BaseModel]
    is_async: bool
    touches_files: bool = False
    """It reads or changes workspace files (and names them with :func:`record_touch` or an
    after-image): it runs under the workspace's lock, so file provenance follows the order
    of the writes."""
    prepare: Callable[[IntentInput], Prepared | None] | None = None
    """Called (in a thread, under the workspace lock for a tool that touches files) just
    before the intent is journaled; what it returns is journaled in the intent."""
    settle: Callable[[SettleInput], Settled] | None = None
    """Called after a crash for an intent without a result that has ``prepared`` facts."""
    check: Callable[[dict[str, Any]], str | None] | None = None
    """For a tool described by a JSON schema rather than a signature (:func:`schema_tool`):
    what is wrong with some arguments (None: nothing), checked instead of ``model``."""

    def spec(self) -> dict[str, Any]:
        """The tool as offered to a model."""
        return {"name": self.name, "description": self.description, "parameters": self.schema}

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Check arguments against the schema; return them coerced.

        Raises:
            UsageError: naming the tool and what is wrong, in words a model can act on.
        """
        if not isinstance(arguments, dict):
            raise UsageError(f"tool {self.name}: arguments must be a JSON object, "
                             f"got {type(arguments).__name__}")
        if self.check is not None:
            wrong = self.check(arguments)
            if wrong is not None:
                raise UsageError(f"tool {self.name}: invalid arguments: {wrong}")
            return dict(arguments)
        try:
            m = self.model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise UsageError(f"tool {self.name}: invalid arguments: {problems(exc)}") from None
        return {k: getattr(m, k) for k in type(m).model_fields}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Calling a tool directly (outside tether) runs the function: handy in tests.
        return self.fn(*args, **kwargs)


def problems(exc: pydantic.ValidationError) -> str:
    """What is wrong with some arguments, field by field, in words a model can act on."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}"
                     for err in exc.errors())


def check_name(name: str) -> None:
    """ToolDefinitionError if a tool's name is empty or only whitespace (the model could
    not call it, and policy rules and approvals could not name it) or holds a NUL
    character: the name is stored as text (effects, approvals), which PostgreSQL's cannot
    hold (:mod:`tether.core.text`). Dots and slashes stay allowed: MCP servers use them."""
    if not name.strip():
        raise ToolDefinitionError(f"a tool's name must not be empty or only whitespace, got "
                                  f"{name!r}: give the tool a name the model and the "
                                  "policy can use (name=...)")
    if NUL in name:
        raise ToolDefinitionError(f"a tool's name {nul_problem(name)}")


@dataclass(frozen=True, slots=True)
class _Hooks:
    touches_files: bool = False
    prepare: Callable[[IntentInput], Prepared | None] | None = None
    settle: Callable[[SettleInput], Settled] | None = None


def _build(fn: Callable[..., Any], name: str | None, effect: Effect, idempotent: bool,
           description: str | None, hooks: _Hooks = _Hooks()) -> Tool:
    if effect not in TOOL_EFFECTS:
        raise ToolDefinitionError(f"tool {name or fn.__name__}: effect must be one of "
                                  f"{', '.join(TOOL_EFFECTS)}, not {effect!r}")
    # ``name=""`` is a mistake to refuse, not a request for the function's name.
    tool_name = fn.__name__ if name is None else name
    check_name(tool_name)
    sig = inspect.signature(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception as exc:
        raise ToolDefinitionError(f"tool {tool_name}: cannot read its type hints: {exc}") from exc
    fields: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name}: *args and **kwargs cannot be described "
                                      "to a model; name every parameter")
        ann = hints.get(p.name, Any)
        fields[p.name] = (ann, ... if p.default is p.empty else p.default)
    try:
        model = pydantic.create_model(f"{tool_name}_args", __config__=pydantic.ConfigDict(
            extra="forbid"), **fields)
        schema = model.model_json_schema()
    except Exception as exc:
        raise ToolDefinitionError(f"tool {tool_name}: cannot derive an argument schema: {exc}") \
            from exc
    schema.pop("title", None)
    doc = description or inspect.getdoc(fn) or tool_name
    return Tool(name=tool_name, fn=fn, effect=effect, idempotent=idempotent,
                description=doc.strip(), schema=schema, model=model,
                is_async=inspect.iscoroutinefunction(fn), touches_files=hooks.touches_files,
                prepare=hooks.prepare, settle=hooks.settle)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(*, effect: Effect = "irreversible", idempotent: bool = False, name: str | None = None,
         description: str | None = None, touches_files: bool = False,
         prepare: Callable[[IntentInput], Prepared | None] | None = None,
         settle: Callable[[SettleInput], Settled] | None = None,
         ) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, effect: Effect = "irreversible",
         idempotent: bool = False, name: str | None = None, description: str | None = None,
         touches_files: bool = False,
         prepare: Callable[[IntentInput], Prepared | None] | None = None,
         settle: Callable[[SettleInput], Settled] | None = None,
         ) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a tool.

    ``prepare`` and ``settle`` let a non-idempotent tool settle itself after a crash
    (see the module docstring and :class:`SettleInput`).

    Example:
        >>> @tool(effect="read")
        ... def lookup(city: str) -> str:
        ...     "Current weather for a city."
        ...     return "sunny"
    """
    if fn is not None:
        return _build(fn, name, effect, idempotent, description)

    hooks = _Hooks(touches_files, prepare, settle)

    def deco(f: Callable[..., Any]) -> Tool:
        return _build(f, name, effect, idempotent, description, hooks)
    return deco
