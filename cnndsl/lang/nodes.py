"""The AST: one frozen dataclass per grammar rule, each with the `Span` it was parsed from.

Named `nodes` rather than `ast` so it never shadows the standard library's module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

from cnndsl.lang.source import Source, Span


@dataclass(frozen=True)
class Node:
    """Base of every AST node."""

    span: Span


# ---- expressions ----
@dataclass(frozen=True)
class Expr(Node):
    """Base of every expression: numbers, names, calls and layer chains share one syntax."""


@dataclass(frozen=True)
class Int(Expr):
    """An integer literal: `32`."""

    value: int


@dataclass(frozen=True)
class Float(Expr):
    """A float literal: `0.5`, `1e-4`."""

    value: float


@dataclass(frozen=True)
class Dims(Expr):
    """A size literal: `3x3`, `224x224x3`."""

    values: tuple[int, ...]


@dataclass(frozen=True)
class Name(Expr):
    """A reference: a `let` binding, a block parameter, a builtin layer (`relu`) or constant (`same`)."""

    id: str


@dataclass(frozen=True)
class InputRef(Expr):
    """The `input` that starts the main chain."""


@dataclass(frozen=True)
class MapRef(Expr):
    """A named feature map, `@e1` (`id` without the `@`): a step `-> @e1` of a chain names the map arriving
    there; anywhere else (a branch, an argument, the start of a chain) it reads that map."""

    id: str


@dataclass(frozen=True)
class Kwarg(Node):
    """A keyword argument `name=value` in a call."""

    name: str
    value: Expr


@dataclass(frozen=True)
class Call(Expr):
    """A call of a builtin layer or a block: `conv(64, 3x3, pad=same)`."""

    func: Name
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@dataclass(frozen=True)
class Group(Expr):
    """A bracketed group of layers: `[conv -> relu]`."""

    body: Expr


@dataclass(frozen=True)
class Tuple(Expr):
    """A tuple: `(3, 4, 6, 3)`."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Index(Expr):
    """An element of a tuple: `depths[i]`."""

    target: Expr
    index: Expr


@dataclass(frozen=True)
class Optional(Expr):
    """An optional part `X?`: present or not according to a binding named after it."""

    target: Expr


@dataclass(frozen=True)
class BinOp(Expr):
    """Arithmetic `a op b`; `*` with a layer on the left repeats it: `[conv]*N`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class RepeatAs(Expr):
    """A repetition whose 0-based index is named: `[stage(64 * 2**i)]*4 as i`."""

    body: Expr
    count: Expr
    index: str


@dataclass(frozen=True)
class Unary(Expr):
    """A sign: `-x`."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Compare(Expr):
    """A comparison `a < b` (no chaining)."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class BoolOp(Expr):
    """`a and b`, `a or b`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not(Expr):
    """`not a`."""

    operand: Expr


@dataclass(frozen=True)
class Conditional(Expr):
    """`then if cond else otherwise`; without `else` a layer that may be left out."""

    then: Expr
    cond: Expr
    otherwise: Expr | None


@dataclass(frozen=True)
class Chain(Expr):
    """Layers in sequence: `a -> b -> c`."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Branches(Expr):
    """Parallel branches `a | b | c`, the argument of `concat(...)` and `add(...)`."""

    items: tuple[Expr, ...]


# ---- statements ----
@dataclass(frozen=True)
class Statement(Node):
    """Base of every statement."""


@dataclass(frozen=True)
class Network(Statement):
    """`network NAME`: the network's name."""

    name: str


@dataclass(frozen=True)
class InputDecl(Statement):
    """`input HxWxC`: the shape of one input image."""

    dims: tuple[int, ...]


@dataclass(frozen=True)
class Binding(Node):
    """One `name = value` of a `let`; `optional` for `let POOL? = true`."""

    name: str
    optional: bool
    value: Expr

    @property
    def key(self) -> str:
        """The name as bindings are looked up: `POOL?` for an optional part."""
        return self.name + "?" if self.optional else self.name


@dataclass(frozen=True)
class Let(Statement):
    """`let N = 2, M = 3`."""

    bindings: tuple[Binding, ...]


@dataclass(frozen=True)
class Param(Node):
    """A block parameter, with its default if any; `optional` (`se?`): a layer that is absent unless given."""

    name: str
    default: Expr | None
    optional: bool = False


@dataclass(frozen=True)
class Block(Statement):
    """`block name(params) = body`: a named, parametrized piece of network."""

    name: str
    params: tuple[Param, ...]
    body: Expr


@dataclass(frozen=True)
class Setting(Binding):
    """One `name = value` of a `train` line; a head's setting names the head first (`aux1 weight = 0.3`:
    `head` is "aux1", `name` is "weight")."""

    head: str | None = None


@dataclass(frozen=True)
class TrainSection(Statement):
    """`train epochs = 15, lr = 0.003`: training settings that travel with the spec."""

    bindings: tuple[Setting, ...]


@dataclass(frozen=True)
class Head(Statement):
    """`head NAME = chain` (`training head NAME = chain`: used only to train, as GoogLeNet's auxiliary
    classifiers): another output; its chain starts where the main chain ends unless it reads a named map."""

    name: str
    training_only: bool
    body: Expr


@dataclass(frozen=True)
class Domain(Node):
    """Base of the values a searched name may take (see `Search`)."""


@dataclass(frozen=True)
class IntRange(Domain):
    """`1..3`: the integers from `low` to `high`, both included."""

    low: int
    high: int


@dataclass(frozen=True)
class Choices(Domain):
    """`{conv(32, 3x3), conv(64, 3x3)}`: one of the listed expressions."""

    options: tuple[Expr, ...]


@dataclass(frozen=True)
class Distribution(Domain):
    """`log(1e-4, 1e-2)`, `uniform(0.1, 0.5)`: a range of numbers to sample from."""

    kind: str
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@dataclass(frozen=True)
class DomainDecl(Node):
    """One `NAME in DOMAIN` of a `search`; `POOL?` with no domain searches both choices."""

    name: str
    optional: bool
    domain: Domain | None

    @property
    def key(self) -> str:
        """The name as bindings are looked up: `POOL?` for an optional part."""
        return self.name + "?" if self.optional else self.name


@dataclass(frozen=True)
class Search(Statement):
    """`search N in 1..3, CONV in {...}`: the design space of a family (its free names' domains)."""

    items: tuple[DomainDecl, ...]


@dataclass(frozen=True)
class Main(Statement):
    """The main chain: `input -> ... -> fc(10)`."""

    body: Expr


@dataclass(frozen=True)
class Import(Statement):
    """`import "blocks.cnn"`: the `let` and `block` definitions of another file; `path` as written."""

    path: str


@dataclass(frozen=True)
class Program(Node):
    """A whole `.cnn` file."""

    statements: tuple[Statement, ...]
    source: Source

    @property
    def name(self) -> str | None:
        """The `network` name, if declared."""
        return next((s.name for s in self.statements if isinstance(s, Network)), None)


def children(node: Node) -> Iterator[Node]:
    """The nodes directly inside `node`, in source order."""
    for f in fields(node):
        value = getattr(node, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, Node):
                yield item


def walk(roots: Iterable[Node]) -> Iterator[Node]:
    """Every node under `roots`, the roots included, in no particular order; iterative (expressions nest as
    deep as the parser allows)."""
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(children(node))
