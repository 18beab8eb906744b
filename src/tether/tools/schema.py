"""Tools described by a JSON schema instead of a Python signature.

An MCP server's tools, a framework's function tools and tools loaded from
configuration arrive as a name, a description and a JSON schema for their
arguments. :func:`schema_tool` makes each a :class:`~tether.tools.base.Tool` like
any other: the model is offered the schema as it is, what the model sends is
checked against it (``jsonschema``, the dialect the schema's ``$schema`` names,
Draft 2020-12 otherwise) before the policy sees the call, and the call is
journaled and gated by its effect class.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions
import pydantic

from tether.core.effect_classes import TOOL_EFFECTS, Effect
from tether.errors import ToolDefinitionError
from tether.tools.base import Tool, check_name


class _AnyArguments(pydantic.BaseModel):
    # The schema is the contract; this model is never used to validate (``Tool.check`` is).
    model_config = pydantic.ConfigDict(extra="allow")


def schema_tool(name: str, fn: Callable[..., Any], *, schema: Mapping[str, Any],
                description: str = "", effect: Effect = "irreversible",
                idempotent: bool = False, touches_files: bool = False) -> Tool:
    """A tool whose arguments a JSON schema describes; ``fn(**arguments)`` runs it.

    The effect class defaults to ``irreversible``, the safe assumption: nothing that
    calls it runs without an allow rule or a granted approval.

    Raises:
        ToolDefinitionError: an effect class tether does not know, a schema that is
            not a valid JSON schema for an object, or a name that is empty, only
            whitespace or holds a NUL character, naming the tool.

    Example:
        >>> lookup = schema_tool("lookup", fetch, effect="read", schema={
        ...     "type": "object", "properties": {"city": {"type": "string"}},
        ...     "required": ["city"]})
    """
    check_name(name)
    if effect not in TOOL_EFFECTS:
        raise ToolDefinitionError(f"tool {name}: effect must be one of "
                                  f"{', '.join(TOOL_EFFECTS)}, not {effect!r}")
    body = dict(schema)
    if body.get("type", "object") != "object":
        raise ToolDefinitionError(f"tool {name}: its argument schema must describe an object "
                                  f"(\"type\": \"object\"), not {body.get('type')!r}")
    return Tool(name=name, fn=fn, effect=effect, idempotent=idempotent,
                description=description.strip() or name, schema=body, model=_AnyArguments,
                is_async=inspect.iscoroutinefunction(fn), touches_files=touches_files,
                check=_checker(name, body))



def _checker(name: str, schema: dict[str, Any]) -> Callable[[dict[str, Any]], str | None]:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ToolDefinitionError(f"tool {name}: its argument schema is not valid: "
                                  f"{exc.message}") from None
    validator = cls(schema)

    def check(arguments: dict[str, Any]) -> str | None:
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if not errors:
            return None
        # In words a model can act on, field by field; a handful is enough to fix a call.
        return "; ".join(f"{'.'.join(str(p) for p in e.absolute_path) or '(arguments)'}: "
                         f"{e.message}" for e in errors[:8])
    return check
