"""The runtime values of the language and the graph they build.

Numbers, tuples and constants are plain Python values. Layers are closures that `apply` themselves to
a node of the graph being built (`GraphBuilder`), so a block's body and an indexed repetition's body
are evaluated in the group they belong to. `POISON` is the value of an expression that already
produced an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnndsl.lang import ir
from cnndsl.lang import nodes as n
from cnndsl.lang.layers import Builtin
from cnndsl.lang.limits import MAX_LAYERS, MAX_WORK, WORK_PER_LAYER
from cnndsl.lang.shapes import output_shape
from cnndsl.lang.source import Source, Span


class Poison:
    """The value of an expression that already produced an error."""

    what = "an erroneous value"

    def __repr__(self) -> str:
        return "POISON"


POISON: Any = Poison()


class TooLarge(Exception):
    """Raised by the graph builder past `MAX_LAYERS`; expansion stops there."""


class TooMuchWork(Exception):
    """Raised when expansion has spent its `Budget`; the innermost repetition or block call it passes
    through records itself as the place to blame (the reason the work multiplied)."""

    def __init__(self, allowed: int) -> None:
        super().__init__()
        self.allowed = allowed
        self.span: Span | None = None
        self.source: Source | None = None
        self.where = ""

    def blame(self, span: Span, source: Source, where: str) -> None:
        """Record the first (innermost) construct the error passes through."""
        if self.span is None:
            self.span, self.source, self.where = span, source, where


@dataclass
class Budget:
    """Units of expansion work (an expression evaluated, a repetition step, a block applied, a layer
    added), shared by the evaluator and the graph builder.

    The allowance is `MAX_WORK` plus `WORK_PER_LAYER` for every layer produced: a spec may spend what
    its layers need, but work that produces nothing (`[[relu]*0]*100000` nested deeper) runs out of
    the fixed part within a second.
    """

    spent: int = 0
    allowed: int = MAX_WORK

    def spend(self, units: int = 1) -> None:
        """Count work; raise `TooMuchWork` past the allowance."""
        self.spent += units
        if self.spent > self.allowed:
            raise TooMuchWork(self.allowed)


# ---------------------------------------------------------------- layer values
class Layer:
    """A piece of network that can be applied to a node of the graph being built."""

    what = "a layer"

    @property
    def text(self) -> str:
        """How the language writes this layer, in block-call labels (the table, `--json` paths that
        `--freeze` matches, the diagram's captions): each kind of layer says it its own way."""
        raise NotImplementedError

    def apply(self, g: GraphBuilder, x: int) -> int:
        """Add this layer's nodes after node `x`; return the id of its output node."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class PrimLayer(Layer):
    """One builtin op: `conv(64, 3x3)`."""

    op: ir.Op
    span: Span
    source: Source

    @property
    def text(self) -> str:
        """How a block-call label shows this layer."""
        return self.op.label()

    def apply(self, g: GraphBuilder, x: int) -> int:
        return g.add(self.op, (x,), self.span, self.source)


@dataclass(frozen=True, eq=False)
class IdentityLayer(Layer):
    """No layer at all: what `X if false` and an absent `X?` become."""

    text = "identity"

    def apply(self, g: GraphBuilder, x: int) -> int:
        return x


IDENTITY = IdentityLayer()


@dataclass(frozen=True, eq=False)
class SeqLayer(Layer):
    """`a -> b -> c`."""

    parts: tuple[Layer, ...]

    @property
    def text(self) -> str:
        """`a -> b`."""
        return " -> ".join(part.text for part in self.parts) or "identity"

    def apply(self, g: GraphBuilder, x: int) -> int:
        for part in self.parts:
            x = part.apply(g, x)
        return x


@dataclass(frozen=True, eq=False)
class RepeatLayer(Layer):
    """`[body]*count`; `body(k)` gives iteration k's layer (it differs when the index is named)."""

    body: Callable[[int], Layer]
    count: int
    span: Span
    count_text: str
    source: Source
    index: str | None = None

    @property
    def text(self) -> str:
        """`[…]*N`: the body is not evaluated to name it (it may differ per iteration)."""
        count = self.count_text if self.count_text.replace("_", "").isalnum() else f"({self.count_text})"
        return f"[…]*{count}"

    def apply(self, g: GraphBuilder, x: int) -> int:
        count = self.count_text if self.count_text.replace("_", "").isalnum() else f"({self.count_text})"
        prefix = f"[…]*{count} {self.index}=" if self.index else f"[…]*{count} "
        suffix = "" if self.index else f"/{self.count}"
        for k in range(self.count):
            g.enter(f"{prefix}{k if self.index else k + 1}{suffix}", self.span, repeat=True)
            try:
                x = self.body(k).apply(g, x)
            except TooMuchWork as err:
                err.blame(self.span, self.source, g.where())
                raise
            finally:
                g.leave()
        return x


@dataclass(frozen=True, eq=False)
class BranchLayer(Layer):
    """`concat(a | b)`, `add(a | b)`, `residual(body, shortcut=...)`: branches from one input, joined."""

    mode: str
    branches: tuple[Layer, ...]
    labels: tuple[str, ...]
    span: Span
    source: Source

    @property
    def text(self) -> str:
        """`add(a | b)`."""
        return f"{self.mode}({' | '.join(branch.text for branch in self.branches)})"

    def apply(self, g: GraphBuilder, x: int) -> int:
        g.enter(self.mode, self.span)
        try:
            outputs = []
            for branch, label in zip(self.branches, self.labels):
                if isinstance(branch, IdentityLayer):
                    outputs.append(x)
                    continue
                g.enter(label, self.span)
                try:
                    outputs.append(branch.apply(g, x))
                finally:
                    g.leave()
            op = {"concat": ir.Concat(), "mul": ir.Mul()}.get(self.mode) or ir.Add(residual=self.mode == "residual")
            return g.add(op, tuple(outputs), self.span, self.source)
        finally:
            g.leave()


@dataclass(frozen=True, eq=False)
class MapName(Layer):
    """`-> @e1`: names the feature map arriving here, in the current scope (the block call it is written
    in, or the network's top level); the map passes on unchanged."""

    name: str
    span: Span
    source: Source

    @property
    def text(self) -> str:
        """`@e1`."""
        return f"@{self.name}"

    def apply(self, g: GraphBuilder, x: int) -> int:
        g.map_scopes[-1][self.name] = x
        g.taps.append(ir.Tap(self.name, x, self.span, tuple(g.frames), self.source))
        return x


@dataclass(frozen=True, eq=False)
class MapRead(Layer):
    """`@e1` as a layer: the feature map named `e1` in `scope` (where the read is written), whatever map
    it is applied to; `@input` is the network's input. A name not (yet) named calls `on_missing`."""

    name: str
    span: Span
    source: Source
    scope: dict[str, int]
    on_missing: Callable[[MapRead], None]

    @property
    def text(self) -> str:
        """`@e1`."""
        return f"@{self.name}"

    def apply(self, g: GraphBuilder, x: int) -> int:
        if self.name in self.scope:
            return self.scope[self.name]
        if self.name == "input":
            return 0
        self.on_missing(self)
        return x


@dataclass(frozen=True, eq=False)
class ResizeToMap(Layer):
    """`resize(@name, mode=...)`: a `resize` to the height and width the named map has (known when applied)."""

    read: MapRead
    mode: str
    span: Span
    source: Source
    on_not_a_map: Callable[[ir.Shape], None]

    @property
    def text(self) -> str:
        """`resize(@input)`."""
        return f"resize(@{self.read.name}{'' if self.mode == 'nearest' else f', mode={self.mode}'})"

    def apply(self, g: GraphBuilder, x: int) -> int:
        target = self.read.apply(g, -1)
        if target < 0:  # reported by the read
            return x
        shape = g.shapes[target]
        if shape is None:  # an earlier error left it unknown
            return x
        if len(shape) != 3:
            self.on_not_a_map(shape)
            return x
        return g.add(ir.Resize((shape[0], shape[1]), self.mode), (x,), self.span, self.source)


@dataclass(frozen=True, eq=False)
class BlockLayer(Layer):
    """A call of a `block`: its body is evaluated, inside the block's frame, when applied."""

    block: n.Block
    label: str
    span: Span
    source: Source
    body: Callable[[ir.Shape | None], Layer]  # given the shape of the input the call is applied to
    on_recursion: Callable[[list[str]], None]

    @property
    def text(self) -> str:
        """The call as written: `se(16)`."""
        return self.label

    def apply(self, g: GraphBuilder, x: int) -> int:
        if self.block.name in g.block_stack:
            self.on_recursion(g.block_stack[g.block_stack.index(self.block.name):] + [self.block.name])
            return x
        g.block_stack.append(self.block.name)
        g.enter(self.label, self.span, call_source=self.source)
        g.map_scopes.append({})  # the maps a block's body names are its own (each call's)
        try:
            return self.body(g.shapes[x]).apply(g, x)
        except TooMuchWork as err:
            err.blame(self.span, self.source, g.where())
            raise
        finally:
            g.map_scopes.pop()
            g.leave()
            g.block_stack.pop()


# ---------------------------------------------------------------- other values
@dataclass(frozen=True, eq=False)
class BuiltinFunc:
    """A builtin layer named but not yet called: `conv`, `relu`."""

    builtin: Builtin
    written: str
    what = "a builtin layer"

    @property
    def text(self) -> str:
        """How a block-call label shows this layer."""
        return self.written


@dataclass(frozen=True, eq=False)
class BlockFunc:
    """A `block` named but not yet called."""

    block: n.Block
    source: Source | None = None  # the file it is written in, when imported
    what = "a block"

    @property
    def text(self) -> str:
        """How a block-call label shows this block."""
        return self.block.name


@dataclass(frozen=True, eq=False)
class NumericFunc:
    """A numeric function of expressions: `max(8, c)`, `round(c * 0.75)` (see expand.FUNCTIONS)."""

    name: str
    what = "a numeric function"

    @property
    def text(self) -> str:
        """`max`."""
        return self.name


@dataclass(frozen=True, eq=False)
class CombinatorFunc:
    """`concat`, `add` or `residual` named but not yet called."""

    name: str
    what = "a layer combinator"

    @property
    def text(self) -> str:
        """`concat`."""
        return self.name


@dataclass(frozen=True, eq=False)
class BranchesValue:
    """`a | b | c`: only an argument of `concat(...)` or `add(...)`."""

    items: tuple[Layer, ...]
    what = "branches `a | b`"

    @property
    def text(self) -> str:
        """`a | b`."""
        return " | ".join(item.text for item in self.items)


@dataclass(eq=False)
class Thunk:
    """A global binding evaluated on first use (so `let` order does not matter)."""

    name: str
    expr: n.Expr
    source: Source
    span: Span
    state: str = "new"  # new | busy | done
    value: Any = None


@dataclass(eq=False)
class Env:
    """A scope: names to values (or global thunks), its parent, and the source its code is in."""

    vars: dict[str, Any]
    parent: Env | None
    source: Source

    def child(self, vars: dict[str, Any]) -> Env:
        """A nested scope over this one, in the same source."""
        return Env(vars, self, self.source)

    def find(self, name: str) -> Any:
        """The innermost binding of `name`, or None."""
        env: Env | None = self
        while env is not None:
            if name in env.vars:
                return env.vars[name]
            env = env.parent
        return None

    def names(self) -> set[str]:
        """Every name visible here."""
        env, out = self, set()
        while env is not None:
            out |= set(env.vars)
            env = env.parent
        return out


# ---------------------------------------------------------------- graph builder
@dataclass
class GraphBuilder:
    """Accumulates IR nodes and the current group path."""

    budget: Budget = field(default_factory=Budget)
    nodes: list[ir.Node] = field(default_factory=list)
    frames: list[ir.Frame] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    block_stack: list[str] = field(default_factory=list)
    shapes: list[ir.Shape | None] = field(default_factory=list)  # each node's, as far as it is known
    next_frame: int = 0
    last_source: Source | None = None  # of the last node added (its span is on the node)
    main_source: Source | None = None  # the spec's own file: nodes written there record no source
    # The named feature maps of each open scope (the top level, then each open block call): name -> node.
    map_scopes: list[dict[str, int]] = field(default_factory=lambda: [{}])
    taps: list[ir.Tap] = field(default_factory=list)  # every `-> @name`, in order

    def add(self, op: ir.Op, inputs: tuple[int, ...], span: Span, source: Source) -> int:
        """Append a node; its name is its op's base name and a per-base counter: `conv3`."""
        if len(self.nodes) > MAX_LAYERS:  # node 0 is the input, not a layer
            raise TooLarge
        if self.nodes:  # a layer (node 0, the input, earns nothing)
            self.budget.allowed += WORK_PER_LAYER
        self.last_source = source
        base = base_name(op)
        self.counts[base] = self.counts.get(base, 0) + 1
        node = ir.Node(len(self.nodes), f"{base}{self.counts[base]}", op, inputs, span, tuple(self.frames),
                       source if source is not self.main_source else None)
        self.nodes.append(node)
        self.shapes.append(output_shape(op, [self.shapes[i] for i in inputs]))
        return node.id

    def enter(self, label: str, span: Span, repeat: bool = False, call_source: Source | None = None) -> None:
        """Open a group `label` (a block call written in `call_source`): nodes added until `leave` belong to
        it. Counts as a unit of work."""
        self.budget.spend()
        self.next_frame += 1
        self.frames.append(ir.Frame(self.next_frame, label, span, repeat, call_source))

    def leave(self) -> None:
        """Close the innermost group."""
        self.frames.pop()

    def where(self) -> str:
        """The open groups as text: `stage(64, 2) › […]*n 2/2`."""
        return " › ".join(f.label for f in self.frames)


def base_name(op: ir.Op) -> str:
    """The stem of a node's name: the op as the language names it (`relu`, `maxpool`, `conv`)."""
    if isinstance(op, ir.Activation):
        return op.fn
    if isinstance(op, ir.Pool):
        return f"{op.mode}pool"
    if isinstance(op, ir.GlobalPool):
        return f"global_{op.mode}pool"
    if isinstance(op, ir.AdaptivePool):
        return "adaptive_avgpool"
    return op.kind
