"""LangGraph's checkpoints as JSON: what tether checkpoints after every superstep.

A LangGraph checkpoint holds the graph's channel values (LangChain messages,
plain JSON, sometimes other Python objects), the channels' versions and what
each node has seen. tether's run state must be JSON, readable in the dashboard
and diffable, so values are encoded here:

- JSON scalars, lists and string-keyed dicts stay as they are;
- LangChain objects (messages, documents) use LangChain's own serialised form
  (``langchain_core.load.dumpd`` / ``load``), tagged ``{"$lc": ...}``;
- a tuple is ``{"$tuple": [...]}``; a dict whose keys are not all strings, or
  that has a key starting with ``$``, is ``{"$dict": [[key, value], ...]}``;
- anything else goes through LangGraph's own serialiser (``JsonPlusSerializer``)
  and is kept as ``{"$lg": [type, base64]}``: exact, if not readable.

``decode(encode(v))`` gives back an equal value. Given a :class:`~.memo.Memo`
(one a step), both skip LangChain's slow path for objects that did not change.
"""

from __future__ import annotations

import base64
import math
import warnings
from typing import Any

from langchain_core._api.beta_decorator import LangChainBetaWarning
from langchain_core.load import dumpd, load
from langchain_core.load.serializable import Serializable
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from tether.integrations.langgraph.memo import Memo

_SERDE = JsonPlusSerializer()
_TAGS = ("$lc", "$tuple", "$dict", "$lg")


def encode(value: Any, memo: Memo | None = None) -> Any:
    """``value`` as JSON (see the module docstring)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _opaque(value)
    if isinstance(value, list):
        return [encode(v, memo) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return {"$tuple": [encode(v, memo) for v in value]}
    if isinstance(value, dict) and type(value) is dict:
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, memo) for k, v in value.items()}
        return {"$dict": [[encode(k, memo), encode(v, memo)] for k, v in value.items()]}
    if isinstance(value, Serializable) and value.is_lc_serializable():
        kept = memo.dumped(value) if memo is not None else None
        return {"$lc": dumpd(value) if kept is None else kept}
    return _opaque(value)


def revive(body: Any) -> Any:
    """A LangChain object from its ``dumpd`` form: only LangChain's own core classes
    (messages, documents...) are rebuilt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangChainBetaWarning)  # ``load`` is marked beta
        return load(body, allowed_objects="core")


def _opaque(value: Any) -> dict[str, Any]:
    kind, blob = _SERDE.dumps_typed(value)
    return {"$lg": [kind, base64.b64encode(blob).decode("ascii")]}


def decode(value: Any, memo: Memo | None = None) -> Any:
    """The value :func:`encode` encoded."""
    if isinstance(value, list):
        return [decode(v, memo) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, body),) = value.items()
        if tag == "$lc":
            return revive(body) if memo is None else memo.revive(body)
        if tag == "$tuple":
            return tuple(decode(v, memo) for v in body)
        if tag == "$dict":
            return {decode(k, memo): decode(v, memo) for k, v in body}
        if tag == "$lg":
            return _SERDE.loads_typed((body[0], base64.b64decode(body[1])))
    return {k: decode(v, memo) for k, v in value.items()}


def message_dict(message: Any) -> dict[str, Any]:
    """A LangChain message as the fingerprint of a model request sees it: its
    ``messages_to_dict`` form without its id (ids are random where LangGraph assigns
    them, and say nothing of what was asked)."""
    from langchain_core.messages import message_to_dict
    out = message_to_dict(message)
    data = {k: v for k, v in out.get("data", {}).items() if k != "id"}
    return {"type": out.get("type"), "data": plain(data)}


def plain(value: Any) -> Any:
    """``value`` as stable JSON for a fingerprint: objects that are not JSON become their
    type's name (never a repr, which would hold an address)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Serializable) and value.is_lc_serializable():
        return plain(dumpd(value))
    if hasattr(value, "model_json_schema"):  # a pydantic model class (structured output)
        try:
            return {"schema": plain(value.model_json_schema())}
        except Exception:  # a class pydantic cannot describe: its name is enough  # noqa: S110
            pass
    kind = value if isinstance(value, type) else type(value)
    return f"<{kind.__module__}.{kind.__qualname__}>"
