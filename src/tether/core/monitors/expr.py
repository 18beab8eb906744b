"""Safe expressions: the invariants a policy file declares, never Python's ``eval``.

A rule is parsed with :mod:`ast` and every node is checked against a whitelist
when the policy is compiled: comparisons, ``and``/``or``/``not``, arithmetic
(``+ - * / // %``, no ``**``: its cost has no bound), constants, list/tuple/set/dict
displays, ``x if c else y``, attribute and index access into the values a rule is
given (``state.history`` is ``state["history"]``), comprehensions, a few functions
(:data:`FUNCS`) and a few methods that read and never change (:data:`METHODS`).
Anything else (a lambda, ``__class__``, an unknown name) is refused with the
policy's key path, so a rule that compiles can only read.

Evaluation is bounded: comprehensions may visit :data:`MAX_ITEMS` items per rule
and a repeated string or list may not exceed that length either. A rule that
fails at run time (a missing key, a wrong type) raises :class:`EvalError`, which
the invariants monitor reports; it never takes the run down.

While it evaluates, a rule records what it saw (:class:`Seen`): the value of each
operand of its top-level comparisons and, for ``all(...)``/``any(...)``, the item
that decided it, which is what an alert shows as the diff.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

MAX_ITEMS: Final = 100_000
MAX_LENGTH: Final = 2_000
"""Characters in one rule."""
MAX_DEPTH: Final = 40
FUNCS: Final[Mapping[str, Callable[..., Any]]] = {
    "len": len, "all": all, "any": any, "sum": sum, "min": min, "max": max, "abs": abs,
    "sorted": sorted, "set": set, "list": list, "str": str, "int": int, "float": float,
    "round": round, "bool": bool}
METHODS: Final = frozenset({"lower", "upper", "strip", "startswith", "endswith", "split",
                            "count", "get", "keys", "values", "items"})
_RECEIVERS: Final = (str, dict, list, tuple, Mapping)
_BINOPS: Final[Mapping[type, Callable[[Any, Any], Any]]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b}
_CMPOPS: Final[Mapping[type, Callable[[Any, Any], bool]]] = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b}
_ALLOWED: Final = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not,
                   ast.USub, ast.UAdd, ast.BinOp, ast.Compare, ast.Constant, ast.Name,
                   ast.Load, ast.Store, ast.Attribute, ast.Subscript, ast.Slice, ast.Call,
                   ast.List, ast.Tuple, ast.Set, ast.Dict, ast.IfExp, ast.GeneratorExp,
                   ast.ListComp, ast.SetComp, ast.DictComp, ast.comprehension,
                   *_BINOPS, *_CMPOPS)


class ExprError(ValueError):
    """A rule that does not compile; the message starts with where it was declared."""


class EvalError(Exception):
    """A rule that could not be evaluated on this step's values (the message says why)."""


@dataclass(slots=True)
class Seen:
    """What a rule looked at in one evaluation, by the source text of each part."""

    values: dict[str, Any] = field(default_factory=dict)
    offending: dict[str, Any] = field(default_factory=dict)
    """The comprehension variables at the item that decided an ``all``/``any``."""
    items: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule: :meth:`holds` evaluates it on the values it was compiled for."""

    text: str
    tree: ast.expr
    names: frozenset[str]

    def holds(self, env: Mapping[str, Any], seen: Seen | None = None) -> bool:
        """Whether the rule is true for ``env`` (its names and values).

        Raises:
            EvalError: a missing key, an operation the values do not support, or a rule
                that visits more than :data:`MAX_ITEMS` items.
        """
        try:
            return bool(_Eval(self.text, dict(env), seen or Seen()).ev(self.tree, top=True))
        except EvalError:
            raise
        except (TypeError, ValueError, ArithmeticError, IndexError, KeyError,
                AttributeError, RecursionError) as exc:
            raise EvalError(f"{type(exc).__name__}: {exc}") from None


def compile_rule(text: object, names: Sequence[str], *, where: str) -> Rule:
    """Parse and check ``text``; ``names`` are the values a rule may name.

    Raises:
        ExprError: not a string, not an expression, or something the whitelist does not
            allow; the message starts with ``where`` and says what to write instead.
    """
    if not isinstance(text, str) or not text.strip():
        raise ExprError(f"{where}: expected an expression as a string, e.g. "
                        '"len(state.history) < 1000"; got ' + repr(text))
    if len(text) > MAX_LENGTH:
        raise ExprError(f"{where}: the rule is {len(text)} characters; at most {MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"{where}: not an expression ({exc.msg} at column "
                        f"{exc.offset or 0}): {text!r}") from None
    _Check(text, where, frozenset(names)).visit(tree.body, frozenset(), 0)
    src = text.strip()
    for node in ast.walk(tree.body):  # what an alert calls each part: its source text
        if isinstance(node, ast.expr):
            node.label = ast.get_source_segment(src, node) or ast.unparse(node)  # type: ignore[attr-defined]
    return Rule(src, tree.body, frozenset(names))


class _Check:
    """The whitelist, walked once at compile time."""

    def __init__(self, text: str, where: str, names: frozenset[str]) -> None:
        self.text, self.where, self.names = text, where, names

    def fail(self, node: ast.AST, why: str) -> ExprError:
        return ExprError(f"{self.where}: {why} (in {ast.unparse(node) or self.text!r}); a rule may use "
                         "comparisons, and/or/not, + - * / // %, attribute and index access, "
                         f"comprehensions, {', '.join(FUNCS)} and the methods "
                         f"{', '.join(sorted(METHODS))}")

    def visit(self, node: ast.AST, bound: frozenset[str], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"nested deeper than {MAX_DEPTH}")
        if not isinstance(node, _ALLOWED):
            raise self.fail(node, f"{type(node).__name__} is not allowed")
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in bound and node.id not in self.names and node.id not in FUNCS \
                    and node.id not in ("True", "False", "None"):
                raise ExprError(f"{self.where}: unknown name {node.id!r} in {self.text!r}; "
                                f"a rule can name {', '.join(sorted(self.names))}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise self.fail(node, f"attribute {node.attr!r} is private")
        elif isinstance(node, ast.Call):
            self._call(node)
        elif isinstance(node, (ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
            self._comprehension(node, bound, depth)
            return
        for child in ast.iter_child_nodes(node):
            self.visit(child, bound, depth + 1)

    def _call(self, node: ast.Call) -> None:
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "keyword and * arguments are not allowed")
        f = node.func
        if isinstance(f, ast.Name) and f.id in FUNCS:
            return
        if isinstance(f, ast.Attribute) and f.attr in METHODS:
            return
        raise self.fail(node, "only the listed functions and methods can be called")

    def _comprehension(self, node: ast.GeneratorExp | ast.ListComp | ast.SetComp
                       | ast.DictComp, bound: frozenset[str], depth: int) -> None:
        for gen in node.generators:
            if gen.is_async:
                raise self.fail(node, "async comprehensions are not allowed")
            self.visit(gen.iter, bound, depth + 1)
            names = _targets(gen.target, self)
            if names & self.names:
                raise self.fail(node, f"{', '.join(sorted(names & self.names))} is a value the "
                                "rule is given; name the comprehension variable otherwise")
            bound = bound | names
            for cond in gen.ifs:
                self.visit(cond, bound, depth + 1)
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        for part in parts:
            self.visit(part, bound, depth + 1)


def _targets(target: ast.expr, check: _Check) -> frozenset[str]:
    if isinstance(target, ast.Name):
        return frozenset({target.id})
    if isinstance(target, ast.Tuple):
        return frozenset().union(*(_targets(t, check) for t in target.elts))
    raise check.fail(target, "a comprehension variable must be a name or a tuple of names")


class _Eval:
    """One evaluation (see :meth:`Rule.holds`)."""

    def __init__(self, text: str, env: dict[str, Any], seen: Seen) -> None:
        self.text, self.env, self.seen = text, env, seen
        self.nested = 0
        """How many all/any are being evaluated around the current node."""

    def ev(self, node: ast.expr, top: bool = False) -> Any:
        # long: one branch per node type, the common ones first by exact type (a rule is
        # evaluated at every step)
        t = type(node)
        if t is ast.Name:
            assert isinstance(node, ast.Name)
            if node.id in self.env:
                return self.env[node.id]
            if node.id in FUNCS:
                return FUNCS[node.id]
            return {"True": True, "False": False, "None": None}[node.id]
        if t is ast.Attribute:
            assert isinstance(node, ast.Attribute)
            return _key(self.ev(node.value), node.attr, node)
        if t is ast.Constant:
            assert isinstance(node, ast.Constant)
            return node.value
        if t is ast.Compare:
            assert isinstance(node, ast.Compare)
            return self._compare(node, top)
        if t is ast.Call:
            assert isinstance(node, ast.Call)
            return self._call(node, top)
        if isinstance(node, ast.BoolOp):
            return self._boolop(node, top)
        if isinstance(node, ast.UnaryOp):
            v = self.ev(node.operand, top and isinstance(node.op, ast.Not))
            return not v if isinstance(node.op, ast.Not) else (-v if isinstance(
                node.op, ast.USub) else +v)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.IfExp):
            return self.ev(node.body, top) if self.ev(node.test) else self.ev(node.orelse, top)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.ev(e) for e in node.elts]
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            return {self.ev(k) if k is not None else None: self.ev(v)
                    for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            kind = set if isinstance(node, ast.SetComp) else list
            return kind(self.ev(node.elt) for _ in self._bindings(node.generators))
        if isinstance(node, ast.DictComp):
            return {self.ev(node.key): self.ev(node.value)
                    for _ in self._bindings(node.generators)}
        raise EvalError(f"cannot evaluate {ast.unparse(node)!r}")

    def _note(self, node: ast.expr, value: Any) -> None:
        if not isinstance(node, ast.Constant):
            self.seen.values.setdefault(getattr(node, "label", ""), value)

    def _boolop(self, node: ast.BoolOp, top: bool) -> Any:
        v: Any = None
        for part in node.values:
            v = self.ev(part, top)
            if bool(v) == isinstance(node.op, ast.Or):
                return v
        return v

    def _binop(self, node: ast.BinOp) -> Any:
        a, b = self.ev(node.left), self.ev(node.right)
        if isinstance(node.op, ast.Mult):
            for seq, n in ((a, b), (b, a)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) \
                        and len(seq) * n > MAX_ITEMS:
                    raise EvalError(f"{ast.unparse(node)!r} would be longer than {MAX_ITEMS}")
        return _BINOPS[type(node.op)](a, b)

    def _compare(self, node: ast.Compare, top: bool) -> bool:
        left = self.ev(node.left)
        if top:
            self._note(node.left, left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.ev(right_node)
            if top:
                self._note(right_node, right)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True

    def _subscript(self, node: ast.Subscript) -> Any:
        base = self.ev(node.value)
        s = node.slice
        if isinstance(s, ast.Slice):
            return base[slice(*(self.ev(p) if p is not None else None
                                 for p in (s.lower, s.upper, s.step)))]
        k = self.ev(s)
        try:
            return base[k]
        except KeyError:
            raise EvalError(f"{ast.unparse(node.value)} has no key {k!r}; write "
                            f"{ast.unparse(node.value)}.get({k!r}, DEFAULT) if it may be "
                            "missing") from None

    def _call(self, node: ast.Call, top: bool) -> Any:
        f = node.func
        if isinstance(f, ast.Attribute):
            obj = self.ev(f.value)
            if not isinstance(obj, _RECEIVERS) or not hasattr(obj, f.attr):
                raise EvalError(f"{ast.unparse(f.value)} is a {type(obj).__name__}, which has "
                                f"no method {f.attr!r}")
            return getattr(obj, f.attr)(*(self.ev(a) for a in node.args))
        assert isinstance(f, ast.Name)
        if f.id in ("all", "any") and len(node.args) == 1 and isinstance(
                node.args[0], ast.GeneratorExp):
            v = self._quantifier(node.args[0], want=f.id == "all")
            if top:
                self._note(node, v)
            return v
        v = FUNCS[f.id](*(self.ev(a) for a in node.args))
        if top:
            self._note(node, v)
        return v

    def _quantifier(self, gen: ast.GeneratorExp, *, want: bool) -> bool:
        """``all``/``any`` over a generator, keeping the item that decided the outermost."""
        outer = self.nested == 0
        self.nested += 1
        try:
            for binding in self._bindings(gen.generators):
                if bool(self.ev(gen.elt)) != want:
                    if outer:
                        self.seen.offending = binding
                    return not want
            return want
        finally:
            self.nested -= 1

    def _bindings(self, gens: Sequence[ast.comprehension],
                  i: int = 0) -> Iterator[dict[str, Any]]:
        """Each combination of the comprehension's variables (set in ``env``), in order."""
        if i == len(gens):
            yield {}
            return
        gen = gens[i]
        for item in self.ev(gen.iter):
            self.seen.items += 1
            if self.seen.items > MAX_ITEMS:
                raise EvalError(f"the rule visits more than {MAX_ITEMS} items")
            bound = _bind(gen.target, item)
            self.env.update(bound)
            if all(self.ev(c) for c in gen.ifs):
                for rest in self._bindings(gens, i + 1):
                    yield {**bound, **rest}


def _bind(target: ast.expr, item: Any) -> dict[str, Any]:
    if isinstance(target, ast.Name):
        return {target.id: item}
    assert isinstance(target, ast.Tuple)
    values = list(item)
    if len(values) != len(target.elts):
        raise EvalError(f"cannot unpack {len(values)} values into {ast.unparse(target)}")
    out: dict[str, Any] = {}
    for t, v in zip(target.elts, values, strict=True):
        out.update(_bind(t, v))
    return out


def _key(obj: Any, name: str, node: ast.Attribute) -> Any:
    """``obj.name``: a mapping's key (the values a rule sees are JSON-like)."""
    if isinstance(obj, Mapping):
        if name in obj:
            return obj[name]
        raise EvalError(f"{ast.unparse(node.value)} has no key {name!r}; write "
                        f"{ast.unparse(node.value)}.get({name!r}, DEFAULT) if it may be missing")
    raise EvalError(f"{ast.unparse(node.value)} is a {type(obj).__name__}, not a table: it "
                    f"has no {name!r}")
