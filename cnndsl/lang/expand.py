"""AST -> IR graph: `expand(program, bindings) -> ir.Graph`.

Expansion evaluates the program: `let` bindings (lazily, so order does not matter, with cycle
detection), `--set` overrides, block calls (with recursion detection), repetition (unrolled, the
index bound for `as i`), optional and conditional parts, and branches. Layer values are closures
that `apply` themselves to a node of the graph being built; a block's body and an indexed
repetition's body are evaluated when applied, so every node records the group path it was made in.

Every problem found is collected; an erroneous value becomes `POISON` (values.py), which spreads
silently, so one mistake is reported once and the rest of the program is still checked.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Callable, Iterator
from typing import Any

from cnndsl.lang import ir
from cnndsl.lang import nodes as n
from cnndsl.lang.errors import CnnError, Diagnostic, closest
from cnndsl.lang.imports import resolve_imports
from cnndsl.lang.layers import (
    BUILTINS,
    COMBINATORS,
    CONSTANTS,
    FOREIGN_PARAMS,
    ArgError,
    describe,
    show,
)
from cnndsl.lang.limits import INT64_MAX, MAX_EXPRESSION_DEPTH, MAX_LAYERS
from cnndsl.lang.source import Source, Span
from cnndsl.lang.values import (
    IDENTITY,
    POISON,
    BlockFunc,
    BlockLayer,
    BranchesValue,
    BranchLayer,
    Budget,
    BuiltinFunc,
    CombinatorFunc,
    Env,
    GraphBuilder,
    Layer,
    MapName,
    MapRead,
    NumericFunc,
    PrimLayer,
    RepeatLayer,
    ResizeToMap,
    SeqLayer,
    Thunk,
    TooLarge,
    TooMuchWork,
)

#: Python recursion limit while expanding: evaluation recurses up to three frames per expression level
#: (CPython 3.11+ keeps Python-to-Python calls off the C stack, so this is safe).
RECURSION_LIMIT = 4 * MAX_EXPRESSION_DEPTH + 5_000


class _TooDeep(Exception):
    """Raised by the evaluator past MAX_EXPRESSION_DEPTH levels of one expression."""


# ---------------------------------------------------------------- the evaluator
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


#: The numeric functions of expressions, by name: (fewest arguments, most or None, the function). `round`
#: rounds half to even, as Python and numpy do (round(2.5) = 2, round(3.5) = 4); `int` truncates toward
#: zero; `floor`, `ceil`, `round` and `int` give whole numbers, `min` and `max` whichever they pick.
FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., Any]]] = {
    "min": (2, None, min), "max": (2, None, max), "round": (1, 1, round), "floor": (1, 1, math.floor),
    "ceil": (1, 1, math.ceil), "int": (1, 1, int),
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_layerish(v: Any) -> bool:
    return isinstance(v, (Layer, BuiltinFunc, BlockFunc))


class _Evaluator:
    """Evaluates expressions in scopes and collects diagnostics."""

    def __init__(self, source: Source) -> None:
        self.diagnostics: list[Diagnostic] = []
        self._seen: set[tuple] = set()
        self.unbound: dict[str, None] = {}  # ordered set of free names, for the family summary
        self.globals = Env({}, None, source)
        self.budget = Budget()
        self.depth = 0  # levels of `value` now running
        self.builder: GraphBuilder | None = None  # while the main chain is applied: its open block calls

    # -- diagnostics
    def error(self, kind: str, message: str, env: Env | Source, span: Span | None,
              help: str | None = None, notes: tuple[str, ...] = (), fix: tuple[str, str] | None = None) -> Any:
        """Record a diagnostic (once per kind, message and place); return POISON."""
        source = env if isinstance(env, Source) else env.source
        key = (kind, message, source.path, span)
        if key not in self._seen:
            self._seen.add(key)
            if self.builder is not None and source is not self.builder.main_source:  # inside an imported file
                notes = notes + ir.call_sites(self.builder.frames)
            self.diagnostics.append(Diagnostic(kind, message, source, span, notes, help, fix))
        return POISON

    def free(self, name: str, message: str, env: Env, span: Span, help: str) -> Any:
        """Report a name the spec leaves unbound (once per name)."""
        if name not in self.unbound:
            self.unbound[name] = None
            self.error("unbound", message, env, span, help)
        return POISON

    # -- names
    def lookup(self, name: str, env: Env, span: Span, calling: bool = False) -> Any:
        """What `name` means here: a local or global binding, a constant, a builtin layer, a function.
        `calling`: the name is called (`mx(3, 4)`), so a function's name is a likely guess for a typo."""
        found = env.find(name)
        if isinstance(found, Thunk):
            return self.force(found)
        if found is not None:
            return found
        lowered = name.lower()
        if lowered in CONSTANTS:
            return CONSTANTS[lowered]
        if lowered in BUILTINS:
            return BuiltinFunc(BUILTINS[lowered], name)
        if lowered in COMBINATORS:
            return IDENTITY if lowered == "identity" else CombinatorFunc(lowered)
        if lowered in FUNCTIONS:
            return NumericFunc(lowered)
        if name in INPUT_NAMES:
            what = {"in_height": "height", "in_width": "width", "in_channels": "channel count"}[name]
            where = "inside a block's body" if name == "in_channels" else \
                "inside the body of a block applied to a feature map (HxWxC)"
            return self.error("name", f"`{name}` is the {what} of a block's input, known only {where}", env, span,
                              f"put the layers in a block: `block b() = conv({name}, 1x1)`")
        known = env.names() | set(BUILTINS) | set(COMBINATORS) | set(CONSTANTS) | (set(FUNCTIONS) if calling else set())
        guess = closest(name, known)
        if guess is not None:
            return self.error("name", f"`{name}` is not defined", env, span, f"did you mean `{guess}`?",
                              fix=(name, guess))
        return self.free(name, f"`{name}` is not bound", env, span,
                         f"bind it in the file with `let {name} = ...` or on the command line with "
                         f"`--set {name}=...`")

    def force(self, thunk: Thunk) -> Any:
        """The value of a global binding, evaluating it the first time."""
        if thunk.state == "done":
            return thunk.value
        if thunk.state == "busy":
            thunk.value = self.error("recursion", f"`{thunk.name}` is defined in terms of itself",
                                     thunk.source, thunk.span, "give it a value that does not use its own name")
            return thunk.value
        thunk.state = "busy"
        depth, self.depth = self.depth, 0  # a binding's depth is its own: the depth where it is used does not add
        scopes = self.builder.map_scopes if self.builder is not None else []
        scopes.append(scopes[0] if scopes else {})  # a `let` reads the top level's maps, wherever it is used
        try:
            value = self.value(thunk.expr, Env({}, self.globals, thunk.source))
        except (_TooDeep, RecursionError):
            value = self.error("limit", f"`{thunk.name}` is nested too deeply to evaluate", thunk.source, thunk.span,
                               "split it into several `let` bindings")
        finally:
            self.depth = depth
            scopes.pop()
        thunk.state, thunk.value = "done", value
        return value

    # -- expressions
    def value(self, expr: n.Expr, env: Env) -> Any:
        """Evaluate an expression to a number, tuple, constant, layer, function or POISON.

        Each call is a unit of the expansion budget, and a level of expression depth."""
        self.budget.spend()
        if self.depth >= MAX_EXPRESSION_DEPTH:
            raise _TooDeep
        self.depth += 1
        try:
            return getattr(self, "_" + type(expr).__name__)(expr, env)
        finally:
            self.depth -= 1

    def layer(self, expr: n.Expr, env: Env) -> Layer:
        """Evaluate an expression that must be a layer."""
        return self.as_layer(self.value(expr, env), expr, env)

    def as_layer(self, v: Any, expr: n.Expr, env: Env) -> Layer:
        """Coerce a value to a layer: a builtin or block named bare is called with no arguments.

        Never returns POISON: an erroneous layer (already reported) becomes the identity.
        """
        layer = self._coerce_layer(v, expr, env)
        return IDENTITY if layer is POISON else layer

    def _coerce_layer(self, v: Any, expr: n.Expr, env: Env) -> Any:
        if isinstance(v, Layer):
            return v
        if v is POISON:
            return IDENTITY
        if isinstance(v, BuiltinFunc):
            return self.call_builtin(v, [], {}, expr.span, env, bare=True)
        if isinstance(v, BlockFunc):
            return self.call_block(v.block, [], {}, expr.span, env, bare=True, source=v.source)
        if isinstance(v, CombinatorFunc):
            return self.error("type", f"`{v.name}` needs its branches", env, expr.span,
                              f"write `{v.name}(a | b)`" if v.name != "residual" else "write `residual(body)`")
        if isinstance(v, BranchesValue):
            return self.error("type", "branches `a | b` must be inside `concat(...)` or `add(...)`", env,
                              expr.span, "write `concat(a | b)` to join them on channels or `add(a | b)` to sum them")
        return self.error("type", f"expected a layer, got {describe(v)}", env, expr.span)

    def number(self, expr: n.Expr, env: Env, what: str, integer: bool = True, minimum: int | None = None) -> Any:
        """Evaluate an expression that must be an integer (or number), at least `minimum`."""
        v = self.value(expr, env)
        if v is POISON:
            return v
        if not _is_number(v) or (integer and not isinstance(v, int)):
            kind = "an integer" if integer else "a number"
            return self.error("type", f"{what} must be {kind}, got {describe(v)}", env, expr.span)
        if minimum is not None and v < minimum:
            return self.error("value", f"{what} must be at least {minimum}, got {v}", env, expr.span)
        return v

    def _Int(self, e: n.Int, env: Env) -> int:
        return e.value

    def _Float(self, e: n.Float, env: Env) -> float:
        return e.value

    def _Dims(self, e: n.Dims, env: Env) -> tuple[int, ...]:
        return e.values

    def _Name(self, e: n.Name, env: Env) -> Any:
        v = self.lookup(e.id, env, e.span)
        if isinstance(v, PrimLayer):  # a name bound to one layer stands for it where it is used
            return PrimLayer(v.op, e.span, env.source)
        return v

    def _InputRef(self, e: n.InputRef, env: Env) -> Any:
        return self.error("syntax", "`input` can only start the main chain", env, e.span,
                          "remove it, or move this chain to the main line `input -> ...`")

    def _Tuple(self, e: n.Tuple, env: Env) -> Any:
        items = tuple(self.value(i, env) for i in e.items)
        return POISON if POISON in items else items

    def _Group(self, e: n.Group, env: Env) -> Layer:
        return self.layer(e.body, env)

    def _Chain(self, e: n.Chain, env: Env) -> Layer:
        return SeqLayer(tuple(self.step(item, env, position) for position, item in enumerate(e.items)))

    def step(self, item: n.Expr, env: Env, position: int) -> Layer:
        """A chain's item: after an arrow (`position` > 0) a bare `@name` names the map arriving there."""
        if position == 0 or not isinstance(item, n.MapRef):
            return self.layer(item, env)
        if item.id == "input":
            self.error("name", "`@input` is the network's input: it cannot name another map", env, item.span,
                       "choose another name, e.g. `-> @x`")
            return IDENTITY
        return MapName(item.id, item.span, env.source)

    def _MapRef(self, e: n.MapRef, env: Env) -> Layer:
        scope = self.builder.map_scopes[-1] if self.builder is not None else {}
        return MapRead(e.id, e.span, env.source, scope, lambda read: self.missing_map(read, env))

    def missing_map(self, read: MapRead, env: Env) -> None:
        """Report a read of a map that no `-> @name` before it names, in the scope it is written in."""
        assert self.builder is not None
        known = [name for name in read.scope] + ["input"]
        guess = closest(read.name, known)
        outer = len(self.builder.map_scopes) > 1 and read.scope is not self.builder.map_scopes[0] and \
            read.name in self.builder.map_scopes[0]
        if outer:
            help = (f"a block's body sees only the maps it names itself: give the block a parameter and pass "
                    f"`@{read.name}` to it, e.g. `block up(c, skip) = ... concat(skip | identity)` called as "
                    f"`up(64, @{read.name})`")
        elif guess is not None:
            help = f"did you mean `@{guess}`?"
        else:
            help = f"name a map earlier in the chain with `-> @{read.name}` (after an arrow)"
        self.error("name", f"no feature map is named `@{read.name}` before this point", env, read.span, help,
                   fix=(f"@{read.name}", f"@{guess}") if guess is not None and not outer else None)

    def _Branches(self, e: n.Branches, env: Env) -> BranchesValue:
        return BranchesValue(tuple(self.layer(item, env) for item in e.items))

    def _Index(self, e: n.Index, env: Env) -> Any:
        target, index = self.value(e.target, env), self.number(e.index, env, "an index")
        if POISON in (target, index):
            return POISON
        if not isinstance(target, tuple):
            return self.error("type", f"only a tuple can be indexed, got {describe(target)}", env, e.target.span)
        if not -len(target) <= index < len(target):
            return self.error("value", f"index {index} is out of range for a tuple of {len(target)}", env,
                              e.index.span, f"use an index from 0 to {len(target) - 1}")
        return target[index]

    def _Optional(self, e: n.Optional, env: Env) -> Any:
        if not isinstance(e.target, n.Name):
            return self.error("syntax", "only a named layer can be optional with `?`", env, e.span,
                              "write `[...] if COND` and bind COND, or name the part with `let`")
        name = e.target.id
        key = name + "?"
        flag = env.find(key)
        if flag is None:  # a free choice; its layer must be bound too, or choosing it would fail
            self.free(key, f"the optional part `{key}` is not bound", env, e.span,
                      f"choose it in the file with `let {key} = true` (or false) or on the command line "
                      f"with `--set '{key}=true'`")
            return self._optional_layer_free(e, env) if not self._known(name, env) else POISON
        flag = self.force(flag) if isinstance(flag, Thunk) else flag
        if flag is POISON:
            return POISON
        if not isinstance(flag, bool):
            return self.error("type", f"`{key}` must be `true` or `false`, got {describe(flag)}", env, e.span)
        if flag and not self._known(name, env):
            return self._optional_layer_free(e, env)
        return self.layer(e.target, env) if flag else IDENTITY

    def _known(self, name: str, env: Env) -> bool:
        """Whether `name` means something here (a binding, a builtin, a constant, a combinator)."""
        lowered = name.lower()
        return env.find(name) is not None or lowered in BUILTINS or lowered in CONSTANTS or lowered in COMBINATORS

    def _optional_layer_free(self, e: n.Optional, env: Env) -> Any:
        """The layer of an optional part `X?` is unbound: a free name of the family, like `X?` itself."""
        name = e.target.id
        return self.free(name, f"`{name}`, the layer of the optional part `{name}?`, is not bound", env, e.target.span,
                         f"bind it in the file with `let {name} = maxpool(2x2)` (say) or on the command line with "
                         f"`--set {name}=\"maxpool(2x2)\"`")

    def _BinOp(self, e: n.BinOp, env: Env) -> Any:
        left, right = self.value(e.left, env), self.value(e.right, env)
        if e.op == "*" and (_is_layerish(left) or _is_layerish(right)):
            body_expr, count_expr = (e.left, e.right) if _is_layerish(left) else (e.right, e.left)
            body_value = left if body_expr is e.left else right
            count = self.repeat_count(count_expr, env)
            body = self.as_layer(body_value, body_expr, env)
            return POISON if count is POISON else RepeatLayer(lambda k: body, count, e.span,
                                                              env.source.snippet(count_expr.span), env.source)
        if POISON in (left, right):
            return POISON
        if not (_is_number(left) and _is_number(right)):
            bad = e.left if not _is_number(left) else e.right
            return self.error("type", f"`{e.op}` needs numbers, got {describe(left if bad is e.left else right)}",
                              env, bad.span)
        if e.op == "**" and isinstance(right, int) and right > 64 and abs(left) > 1:
            # Decided before computing: 2 ** (2 ** 36) would take minutes and gigabytes to find out.
            return self.error("limit", "the number does not fit in 64 bits", env, e.span,
                              f"numbers are limited to {INT64_MAX:,}")
        try:
            result = _ARITH[e.op](left, right)
        except ZeroDivisionError:
            return self.error("value", "division by zero", env, e.right.span)
        except OverflowError:
            return self.error("limit", "the number is too large", env, e.span)
        if isinstance(result, complex):
            return self.error("value", "a negative number to a fractional power has no real value", env, e.span)
        if (abs(result) > INT64_MAX) if isinstance(result, int) else not math.isfinite(result):
            return self.error("limit", "the number does not fit in 64 bits", env, e.span,
                              f"numbers are limited to {INT64_MAX:,}")
        return result

    def repeat_count(self, expr: n.Expr, env: Env) -> Any:
        """The count of a repetition: an integer from 0 to MAX_LAYERS."""
        count = self.number(expr, env, "a repetition count", minimum=0)
        if count is not POISON and count > MAX_LAYERS:
            return self.error("limit", f"repeating {count} times exceeds the limit of {MAX_LAYERS:,} layers",
                              env, expr.span, "use a smaller count")
        return count

    def _RepeatAs(self, e: n.RepeatAs, env: Env) -> Any:
        count = self.repeat_count(e.count, env)
        if count is POISON:
            self.layer(e.body, env.child({e.index: POISON}))  # still check the body once
            return POISON
        return RepeatLayer(lambda k: self.layer(e.body, env.child({e.index: k})), count, e.span,
                           env.source.snippet(e.count.span), env.source, e.index)

    def _Unary(self, e: n.Unary, env: Env) -> Any:
        v = self.number(e.operand, env, f"the operand of `{e.op}`", integer=False)
        return v if v is POISON else (-v if e.op == "-" else v)

    def _Compare(self, e: n.Compare, env: Env) -> Any:
        left, right = self.value(e.left, env), self.value(e.right, env)
        if POISON in (left, right):
            return POISON
        if e.op in ("==", "!="):
            return _COMPARE[e.op](left, right)
        if not (_is_number(left) and _is_number(right)):
            return self.error("type", f"`{e.op}` compares numbers", env, e.span)
        return _COMPARE[e.op](left, right)

    def truth(self, expr: n.Expr, env: Env) -> Any:
        """Evaluate a condition: it must be `true` or `false`."""
        v = self.value(expr, env)
        if v is POISON or isinstance(v, bool):
            return v
        return self.error("type", f"a condition must be `true` or `false`, got {describe(v)}", env, expr.span)

    def _BoolOp(self, e: n.BoolOp, env: Env) -> Any:
        left = self.truth(e.left, env)
        if left is POISON:
            return POISON
        if (e.op == "and" and not left) or (e.op == "or" and left):
            return left
        return self.truth(e.right, env)

    def _Not(self, e: n.Not, env: Env) -> Any:
        v = self.truth(e.operand, env)
        return v if v is POISON else not v

    def _Conditional(self, e: n.Conditional, env: Env) -> Any:
        cond = self.truth(e.cond, env)
        if cond is POISON:
            self.value(e.then, env)
            return POISON
        if cond:
            return self.value(e.then, env)
        return IDENTITY if e.otherwise is None else self.value(e.otherwise, env)

    # -- calls
    def _Call(self, e: n.Call, env: Env) -> Any:
        func = self.lookup(e.func.id, env, e.func.span, calling=True)
        args = [(self.value(a, env), a) for a in e.args]
        kwargs = {k.name: (self.value(k.value, env), k) for k in e.kwargs}
        seen: set[str] = set()
        for k in e.kwargs:
            if k.name in seen:
                self.error("arguments", f"`{k.name}` is given twice", env, k.span, "remove one of them")
            seen.add(k.name)
        if func is POISON:
            return POISON
        if isinstance(func, BlockFunc):
            return self.call_block(func.block, args, kwargs, e.span, env, source=func.source)
        kwargs = {k.lower(): v for k, v in kwargs.items()}  # a builtin's parameter names are keywords too
        if isinstance(func, BuiltinFunc):
            return self.call_builtin(func, args, kwargs, e.span, env)
        if isinstance(func, CombinatorFunc):
            return self.call_combinator(func.name, args, kwargs, e, env)
        if isinstance(func, NumericFunc):
            return self.call_function(func.name, args, kwargs, e, env)
        return self.error("type", f"`{e.func.id}` is {describe(func)}, not a layer or block that takes arguments",
                          env, e.func.span, f"write `{e.func.id}` without arguments")

    def call_function(self, name: str, args: list, kwargs: dict, e: n.Call, env: Env) -> Any:
        """`min`, `max`, `round`, `floor`, `ceil`, `int` of numbers (FUNCTIONS), each misuse located."""
        fewest, most, function = FUNCTIONS[name]
        if kwargs:
            first = next(iter(kwargs.values()))[1]
            return self.error("arguments", f"`{name}` takes no named arguments", env, first.span,
                              f"write `{name}({', '.join(['x'] * fewest)})`")
        if len(args) < fewest or (most is not None and len(args) > most):
            wanted = f"{fewest} number{'s' * (fewest > 1)}" if most == fewest else f"at least {fewest} numbers"
            return self.error("arguments", f"`{name}` takes {wanted}, got {len(args)}", env, e.span,
                              f"e.g. `{name}({', '.join(['8', 'c'][:fewest] if fewest > 1 else ['c * 0.75'])})`")
        values = [v for v, _ in args]
        if POISON in values:
            return POISON
        for value, expr in args:
            if not _is_number(value):
                return self.error("type", f"`{name}` needs numbers, got {describe(value)}", env, expr.span)
        try:
            result = function(*values)
        except (OverflowError, ValueError):  # an infinity or NaN, should one ever get this far
            return self.error("limit", "the number does not fit in 64 bits", env, e.span)
        if isinstance(result, int) and abs(result) > INT64_MAX:
            return self.error("limit", "the number does not fit in 64 bits", env, e.span,
                              f"numbers are limited to {INT64_MAX:,}")
        return result

    def bind(self, name: str, params: list[str], required: set[str], args: list, kwargs: dict,
             span: Span, env: Env) -> dict[str, tuple[Any, n.Node]] | None:
        """Match call arguments to parameters, reporting extra, unknown, repeated and missing ones."""
        bound: dict[str, tuple[Any, n.Node]] = {}
        ok = True
        for i, (v, expr) in enumerate(args):
            if i >= len(params):
                takes = f"{len(params)} argument{'s' if len(params) != 1 else ''}"
                self.error("arguments", f"`{name}` takes {takes}, got {len(args)}", env, expr.span,
                           f"its parameters are: {', '.join(params) or 'none'}")
                ok = False
                break
            bound[params[i]] = (v, expr)
        for key, (v, kw) in kwargs.items():
            if key not in params:
                guess = FOREIGN_PARAMS.get(key) if FOREIGN_PARAMS.get(key) in params else closest(key, params)
                hint = f"did you mean `{guess}`?" if guess else f"its parameters are: {', '.join(params) or 'none'}"
                self.error("arguments", f"`{name}` has no parameter `{key}`", env, kw.span, hint,
                           fix=(key, guess) if guess else None)
                ok = False
            elif key in bound:
                self.error("arguments", f"`{key}` is given twice, by position and by name", env, kw.span,
                           "remove one of them")
                ok = False
            else:
                bound[key] = (v, kw.value)
        missing = [p for p in params if p in required and p not in bound]
        if missing:
            what = " and ".join(f"`{m}`" for m in missing)
            self.error("arguments", f"`{name}` needs {what}", env, span,
                       f"pass {'it' if len(missing) == 1 else 'them'}: `{name}({', '.join(missing)})`")
            ok = False
        return bound if ok else None

    def call_builtin(self, func: BuiltinFunc, args: list, kwargs: dict, span: Span, env: Env,
                     bare: bool = False) -> Any:
        """Check arguments against a builtin's parameters and make its layer."""
        b = func.builtin
        if bare and b.required:
            what = ("parameter " if len(b.required) == 1 else "parameters ") + " and ".join(
                f"`{p}`" for p in b.required)
            if func.written != func.written.lower():  # the course's CONV: a free parameter of a family
                return self.free(func.written, f"`{func.written}` needs its {what}", env, span,
                                 f"bind it, e.g. `let {func.written} = {b.example}` or "
                                 f"`--set {func.written}=\"{b.example}\"`")
            return self.error("arguments", f"`{func.written}` needs its {what}", env, span,
                              f"write it with its parameters, e.g. `{b.example}`")
        bound = self.bind(b.name, [p.name for p in b.params], set(b.required), args, kwargs, span, env)
        if bound is None:
            return POISON
        converted: dict[str, Any] = {}
        for p in b.params:
            value, where = bound.get(p.name, (p.default, None))
            if value is POISON:
                return POISON
            if b.name == "resize" and p.name == "size" and isinstance(value, MapRead):
                converted[p.name] = value  # the size of a named map, known when the layer is applied
                continue
            try:
                converted[p.name] = p.convert(value)
            except ArgError as err:
                at = where.span if where is not None else span
                return self.error("type", f"`{p.name}` of `{b.name}`: {err.message}", env, at, err.help)
        if isinstance(converted.get("size"), MapRead):
            read = converted["size"]

            def not_a_map(shape: ir.Shape) -> None:
                self.error("shape", f"`resize` takes the height and width of `@{read.name}`, which is not a "
                                    f"feature map: it gives {'x'.join(map(str, shape))}", env, read.span,
                           "name a feature map (HxWxC) with `-> @name` and resize to it")

            return ResizeToMap(read, converted["mode"], span, env.source, not_a_map)
        return PrimLayer(b.build(**converted), span, env.source)

    def call_block(self, block: n.Block, args: list, kwargs: dict, span: Span, env: Env,
                   bare: bool = False, source: Source | None = None) -> Any:
        """Bind a block's arguments; the body is evaluated when the call is applied."""
        self.budget.spend(2)  # binding arguments and making the call's label cost two expressions' worth
        params = [p.name for p in block.params]
        required = {p.name for p in block.params if p.default is None and not p.optional}
        if bare and required:
            return self.error("arguments", f"block `{block.name}` needs arguments", env, span,
                              f"call it: `{block.name}({', '.join(params)})`")
        bound = self.bind(block.name, params, required, args, kwargs, span, env)
        if bound is None:
            return POISON
        home = Env({}, self.globals, source or self.globals.source)  # where the block is written
        scope: dict[str, Any] = {}
        for p in block.params:
            if p.optional:  # `se?`: the layer given, or none; in the body `se?` and `se` both apply it
                scope[p.name] = bound[p.name][0] if p.name in bound else IDENTITY
                scope[p.name + "?"] = p.name in bound
                if p.default is not None:
                    self.error("syntax", f"the optional parameter `{p.name}?` has a default", env, p.span,
                               f"an optional layer is absent unless given: write `{p.name}?`, or "
                               f"`{p.name}=LAYER` for a default")
            elif p.name in bound:
                scope[p.name] = bound[p.name][0]
            else:
                scope[p.name] = self.value(p.default, home)
        shown = [show(scope[p]) for p in params[: len(args)]]
        shown += [f"{p}={show(scope[p])}" for p in params[len(args):] if p in kwargs]
        label = f"{block.name}({', '.join(shown)})" if params else block.name

        def body(shape: ir.Shape | None) -> Layer:
            # the input's shape, known when the call is applied: in_channels, in_height, in_width
            known = {INPUT_NAMES[-1]: shape[-1]} if shape else {}
            if shape is not None and len(shape) == 3:
                known.update(zip(INPUT_NAMES[:2], shape[:2]))
            missing = {name: POISON for name in INPUT_NAMES if name not in known} if shape is None else {}
            return self.layer(block.body, Env({**known, **missing, **scope}, self.globals, home.source))

        def on_recursion(cycle: list[str]) -> None:
            self.error("recursion", f"block `{block.name}` calls itself: {' -> '.join(cycle)}", env, span,
                       "a network is finite: use `[...]*N` for repetition")

        return BlockLayer(block, label, span, env.source, body, on_recursion)

    def call_combinator(self, name: str, args: list, kwargs: dict, e: n.Call, env: Env) -> Any:
        """`concat(a | b)`, `add(a | b)`, `mul(a | b)`, `residual(body, shortcut=...)`."""
        if name == "residual":
            bound = self.bind("residual", ["body", "shortcut"], {"body"}, args, kwargs, e.span, env)
            if bound is None:
                return POISON
            body = self.as_layer(*bound["body"], env)
            shortcut = self.as_layer(*bound.get("shortcut", (IDENTITY, e)), env)
            return BranchLayer("residual", (body, shortcut), ("body", "shortcut"), e.span, env.source)
        bound = self.bind(name, ["branches"], {"branches"}, args, kwargs, e.span, env)
        if bound is None:
            return POISON
        v, _ = bound["branches"]
        if v is POISON:
            return POISON
        items = v.items if isinstance(v, BranchesValue) else (self.as_layer(v, e, env),)
        labels = tuple(f"branch {i + 1}/{len(items)}" for i in range(len(items)))
        return BranchLayer(name, items, labels, e.span, env.source)


#: Names a block's body may use for the shape of the input its call is applied to (a vector input has
#: only `in_channels`, its length). A parameter of the same name takes precedence.
INPUT_NAMES = ("in_height", "in_width", "in_channels")


# ---------------------------------------------------------------- the entry point
def expand(program: n.Program, overrides: dict[str, tuple[n.Expr, Source]] | None = None) -> ir.Graph:
    """Evaluate a program into its IR graph; raise `CnnError` with every problem found.

    `overrides` maps names (`N`, `POOL?`) to expressions given outside the file (`--set`), each with
    the `Source` it was parsed from; they replace the file's `let` bindings of the same name.
    """
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, RECURSION_LIMIT))
    try:
        return _expand(program, overrides)
    finally:
        sys.setrecursionlimit(limit)


def _expand(program: n.Program, overrides: dict[str, tuple[n.Expr, Source]] | None) -> ir.Graph:
    source = program.source
    ev = _Evaluator(source)
    name, input_decl, main = program.name or "network", None, None
    defined: dict[str, tuple[n.Node, Source]] = {}
    imported, problems = resolve_imports(program)
    ev.diagnostics.extend(problems)
    for other in imported:  # the definitions of imported files, first: a clash is shown at the later one
        for stmt in other.statements:
            if isinstance(stmt, (n.Let, n.Block)):
                _define(ev, defined, stmt, other.source)
    for stmt in program.statements:
        if isinstance(stmt, n.InputDecl):
            if input_decl is not None:
                ev.error("duplicate", "the input is declared twice", source, stmt.span, "keep one `input` line")
            input_decl = stmt
        elif isinstance(stmt, n.Main):
            if main is not None:
                ev.error("duplicate", "a spec has one main chain; this is a second", source, stmt.span,
                         "join the chains with `->`")
            main = main or stmt
        elif isinstance(stmt, (n.Let, n.Block)):
            _define(ev, defined, stmt, source)
    used_overrides = []
    for key, (expr, set_source) in (overrides or {}).items():
        thunk = Thunk(key, expr, set_source, expr.span)
        used_overrides.append((key, thunk, key in ev.globals.vars))
        ev.globals.vars[key] = thunk

    if input_decl is None:
        ev.error("input", "the spec does not declare its input", source, source.start(),
                 "add a line like `input 32x32x3` (height x width x channels)")
    elif len(input_decl.dims) != 3 or min(input_decl.dims) < 1:
        ev.error("input", f"the input must be HxWxC, got {'x'.join(map(str, input_decl.dims))}", source,
                 input_decl.span, "e.g. `input 28x28x1` for a grayscale image")
    if main is None:
        ev.error("input", "the spec has no main chain", source, source.end(),
                 "add a line like `input -> conv(32, 3x3) -> relu -> fc(10)`")
    elif isinstance(main.body, n.Branches):
        ev.as_layer(BranchesValue(()), main.body, ev.globals)  # reports "branches must be inside concat"
        main = None

    g = GraphBuilder(ev.budget, main_source=source)
    ev.builder = g
    output, heads = 0, ()
    try:
        if input_decl is not None and main is not None:
            g.add(ir.Input(input_decl.dims), (), input_decl.span, source)
            output = _apply_chain(ev, g, main.body, output, main=True)
            heads = _apply_heads(ev, g, program, output)
        mentioned = set().union(_names_in(program), *(_names_in(other) for other in imported))
        for key, thunk, known in used_overrides:
            if not known and key not in mentioned:
                names = list(defined) + list(ev.unbound)
                guess = closest(key, names)
                ev.error("name", f"`--set {key}` binds a name the spec does not use", thunk.source, thunk.span,
                         f"did you mean `{guess}`?" if guess else
                         (f"the spec's names are: {', '.join(names)}" if names else "the spec has no names to set"))
        for value in list(ev.globals.vars.values()):  # report errors in bindings the network does not use
            if isinstance(value, Thunk):
                ev.force(value)
    except TooLarge:
        notes = (f"in {g.nodes[-1].where()}",) if g.nodes[-1].path else ()
        ev.error("limit", f"the network expands to more than {MAX_LAYERS:,} layers", g.last_source or source,
                 g.nodes[-1].span, "use smaller repetition counts", notes)
    except TooMuchWork as err:
        notes = (f"in {err.where}",) if err.where else ()
        ev.error("limit", f"the spec takes more than {err.allowed:,} steps to expand "
                          f"({max(len(g.nodes) - 1, 0):,} layers so far)",
                 err.source or source,
                 err.span or (main.span if main else source.start()),
                 "repeat fewer times: nested repetitions multiply, even when they produce no layers", notes)
    except (_TooDeep, RecursionError):
        ev.error("limit", "the spec nests blocks or expressions too deeply to expand", source,
                 main.span if main else source.start(), "use fewer levels of nesting")
    if not ev.diagnostics:
        _report_unused(ev, g, (output,) + tuple(h.node for h in heads))
    if ev.unbound and all(d.kind == "unbound" for d in ev.diagnostics):
        free = ", ".join(f"`{k}`" for k in ev.unbound)
        example = " ".join(f"--set '{k}=...'" if k.endswith("?") else f"--set {k}=..." for k in ev.unbound)
        ev.diagnostics.append(Diagnostic(
            "unbound", f"the spec is a family with {len(ev.unbound)} free name{'s' if len(ev.unbound) > 1 else ''}: "
                       f"{free}", source, main.span if main else source.start(),
            help=(f"its `search` lines give them domains: `cnndsl family {source.path}` lists the members, "
                  f"`cnndsl sweep` trains them; or bind them with `{example}`"
                  if any(isinstance(s, n.Search) for s in program.statements) else
                  f"bind them with `let` in the file or `{example}`")))
    if ev.diagnostics:
        raise CnnError(tuple(ev.diagnostics), free_names=tuple(ev.unbound))
    return ir.Graph(name, tuple(g.nodes), output, source, imported, tuple(g.taps), heads)


def _apply_chain(ev: _Evaluator, g: GraphBuilder, body: n.Expr, x: int, main: bool = False) -> int:
    """Apply a statement's chain (the main one, or a head's) to node `x`, item by item, each evaluated just
    before it is applied (so a read sees the maps named before it); the main chain's leading `input` is
    node `x` itself."""
    items = body.items if isinstance(body, n.Chain) else (body,)
    for position, item in enumerate(items):
        if main and position == 0 and isinstance(item, n.InputRef):
            continue
        x = ev.step(item, ev.globals, position).apply(g, x)
    return x


def _apply_heads(ev: _Evaluator, g: GraphBuilder, program: n.Program, output: int) -> tuple[ir.Head, ...]:
    """Build each `head NAME = ...` after the main chain, each in a group `head NAME`: its chain starts at the
    main output (so `head probs = softmax` works) or reads a named map."""
    heads: list[ir.Head] = []
    seen: dict[str, n.Head] = {}
    for stmt in program.statements:
        if not isinstance(stmt, n.Head):
            continue
        if stmt.name in seen or stmt.name == "main":
            first = seen.get(stmt.name)
            ev.error("duplicate", f"the head `{stmt.name}` is declared twice" if first else
                     "`main` is the main chain's output: a head needs another name", program.source, stmt.span,
                     "rename one of them" if first else "e.g. `head aux = ...`",
                     (f"first declared at line {first.span.line}",) if first else ())
            continue
        seen[stmt.name] = stmt
        g.enter(f"head {stmt.name}", stmt.span)
        try:
            x = _apply_chain(ev, g, stmt.body, output)
        finally:
            g.leave()
        if x == output or any(x == h.node for h in heads):
            ev.error("value", f"the head `{stmt.name}` adds no layer: it is an output already", program.source,
                     stmt.span, "give it its own layers, e.g. `head aux = @x -> global_avgpool -> fc(10)`")
            continue
        heads.append(ir.Head(stmt.name, x, stmt.training_only, stmt.span))
    return tuple(heads)


def _report_unused(ev: _Evaluator, g: GraphBuilder, outputs: tuple[int, ...]) -> None:
    """A layer whose output nothing reads is a mistake: a step that reads a named map (`-> concat(@a | @b)`)
    starts from that map, dropping the one that arrives. Reported at the last layer of each dropped part."""
    read = set(outputs) | {i for node in g.nodes for i in node.inputs}
    for node in g.nodes[1:]:
        if node.id not in read:
            ev.error("unused", f"the output of `{node.op.label()}` is never used", node.source or g.main_source or
                     ev.globals.source, node.span,
                     "the next step reads a named map (`@name`) instead of this one: name this map with `-> @x` "
                     "and read it with `@x`, join it (`concat(@x | identity)`), or remove it",
                     node.notes(ev.globals.source, outside_own_group=len(node.inputs) > 1))


def _names_in(program: n.Program) -> set[str]:
    """Every name the program refers to, and `X?` for each optional part `X?` (iteratively: expressions
    can be long)."""
    names = set()
    for node in n.walk(program.statements):
        if isinstance(node, n.Name):
            names.add(node.id)
        elif isinstance(node, n.Optional) and isinstance(node.target, n.Name):
            names.add(node.target.id + "?")
    return names


def _define(ev: _Evaluator, defined: dict[str, tuple[n.Node, Source]], stmt: n.Let | n.Block, source: Source) -> None:
    """Bind a `let` or `block` statement's names globally; a name bound before is an error at this one."""
    for key, node, value in _definitions(stmt, source):
        if key in defined:
            first, where = defined[key]
            ev.error("duplicate", f"`{key}` is defined twice", source, node.span,
                     "rename one of them" if where is source else
                     "rename one of them: an imported file's names and this file's share one namespace",
                     (f"first defined at {where.path}:{first.span.line}:{first.span.col}",))
            # Neither definition is the one meant until the user says which: the name's uses report
            # nothing more (checked against the first, they gave errors that misled).
            ev.globals.vars[key] = POISON
            continue
        defined[key] = (node, source)
        ev.globals.vars[key] = value


def _definitions(stmt: n.Let | n.Block, source: Source) -> Iterator[tuple[str, n.Node, Any]]:
    if isinstance(stmt, n.Block):
        yield stmt.name, stmt, BlockFunc(stmt, source)
        return
    for b in stmt.bindings:
        yield b.key, b, Thunk(b.key, b.value, source, b.span)
