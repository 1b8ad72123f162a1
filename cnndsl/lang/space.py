"""A family's design space: the `search` lines of a spec, checked, as a tuple of `Dimension`s.

    search N in 1..3, POOL?, CONV in {conv(32, 3x3, pad=same), conv(64, 3x3, pad=same)}
    search lr in log(1e-4, 1e-2)

Each searched name is either a free name of the network (what `check` lists as the family's free names) or
a training setting (`lr`, `epochs`, `optimizer`, ...). A member of the family is one value per dimension,
`{"N": 2, "POOL?": True, "CONV": "conv(32, 3x3, pad=same)", "lr": 0.003}`: numbers as numbers, a choice as
its text as written in the spec (what Optuna stores and tables print). `Space.overrides` turns a member into
the expressions `expand` binds, `Space.settings` into training settings. No JAX here.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cnndsl.lang import nodes as n
from cnndsl.lang.errors import CnnError, Diagnostic, closest
from cnndsl.lang.settings import Settings, spec_settings
from cnndsl.lang.source import Source, Span

Member = dict[str, Any]  # one value per dimension, by the dimension's name
SETTINGS = tuple(f.name for f in dataclasses.fields(Settings) if f.name not in ("data_dir", "data"))


@dataclass(frozen=True)
class Dimension:
    """One searched name and the values it may take.

    kind: "int" (low..high, `log` for a log-scaled integer range), "float" (low..high, `log`),
    "bool" (an optional part `X?`) or "choice" (`options`, expressions shown as `texts`).
    """

    name: str
    kind: str
    setting: bool
    span: Span
    low: float = 0
    high: float = 0
    log: bool = False
    options: tuple[n.Expr, ...] = ()
    texts: tuple[str, ...] = ()

    @property
    def discrete(self) -> bool:
        """Whether the values can be listed: every kind but a float range."""
        return self.kind != "float"

    def values(self) -> tuple[Any, ...]:
        """Every value of a discrete dimension, in order."""
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1))
        if self.kind == "bool":
            return (True, False)
        if self.kind == "choice":
            return self.texts
        raise ValueError(f"{self.name} is a continuous range")

    def size(self) -> int | None:
        """How many values there are (None for a float range)."""
        return len(self.values()) if self.discrete else None

    def describe(self) -> str:
        """The domain as a person reads it: `1..3`, `{a, b}`, `log(0.0001, 0.01)`, `true/false`."""
        if self.kind == "bool":
            return "true/false"
        if self.kind == "choice":
            return "{" + ", ".join(self.texts) + "}"
        if self.kind == "int" and not self.log:
            return f"{int(self.low)}..{int(self.high)}"
        return f"{'log' if self.log else 'uniform'}({self.low:g}, {self.high:g})"

    def expr(self, value: Any) -> n.Expr:
        """The expression a value stands for, located at the domain (errors in it point there)."""
        if self.kind == "choice":
            return self.options[self.texts.index(value)]
        if self.kind == "bool":
            return n.Name(self.span, "true" if value else "false")
        if self.kind == "int":
            return n.Int(self.span, int(value))
        return n.Float(self.span, float(value))


@dataclass(frozen=True)
class Space:
    """The checked `search` lines of a program, and the free names bound outside them (`fixed`)."""

    program: n.Program
    dimensions: tuple[Dimension, ...]
    free_names: tuple[str, ...]
    fixed: Mapping[str, tuple[n.Expr, Source]]

    @property
    def architecture(self) -> tuple[Dimension, ...]:
        """The dimensions that change the network (not the training settings)."""
        return tuple(d for d in self.dimensions if not d.setting)

    def count(self) -> int | None:
        """How many different networks the family has (None when a float range changes the network)."""
        total = 1
        for d in self.architecture:
            size = d.size()
            if size is None:
                return None
            total *= size
        return total

    def grid_count(self) -> int:
        """How many networks `networks()` lists: the product of the discrete dimensions of the network."""
        return math.prod(d.size() or 1 for d in self.architecture)

    def networks(self) -> Iterator[Member]:
        """Every network of the family (architecture dimensions only), in order: the first dimension varies
        slowest. A float dimension of the network takes its lower bound (see `count`)."""
        for index in range(self.grid_count()):
            yield self.network_at(index)

    def network_at(self, index: int) -> Member:
        """The `index`th network of `networks()` (mixed-radix, so a sample needs no full list)."""
        member: Member = {}
        for d in reversed(self.architecture):
            if d.discrete:
                values = d.values()
                index, k = divmod(index, len(values))
                member[d.name] = values[k]
            else:
                member[d.name] = d.low
        return {d.name: member[d.name] for d in self.architecture}

    def overrides(self, member: Member) -> dict[str, tuple[n.Expr, Source]]:
        """The bindings `expand` takes for a member: the fixed ones and the member's network dimensions."""
        out = dict(self.fixed)
        for d in self.architecture:
            if d.name in member:
                out[d.name] = (d.expr(member[d.name]), self.program.source)
        return out

    def settings(self, member: Member) -> dict[str, Any]:
        """The training settings a member sets, typed as `Settings` holds them."""
        out: dict[str, Any] = {}
        for d in self.dimensions:
            if d.setting and d.name in member:
                found, problems = _setting(d.name, d.expr(member[d.name]), self.program.source)
                if problems:
                    raise CnnError(tuple(problems))
                out.update(found)
        return out

    def label(self, member: Member) -> str:
        """`N=2 M=1 POOL?=true CONV=conv(32, 3x3)`: a member in one line."""
        return " ".join(f"{k}={_show(v)}" for k, v in member.items())


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _setting(name: str, expr: n.Expr, source: Source) -> tuple[dict[str, Any], list[Diagnostic]]:
    """A training setting's value from an expression, checked as a `train` line would check it."""
    binding = n.Setting(expr.span, name, False, expr)
    program = types.SimpleNamespace(source=source, statements=(n.TrainSection(expr.span, (binding,)),))
    return spec_settings(program)


def space_of(program: n.Program, fixed: Mapping[str, tuple[n.Expr, Source]] | None = None,
             free_names: tuple[str, ...] | None = None) -> Space:
    """Check a program's `search` lines; raise `CnnError` with every problem (all located in the spec).

    `fixed` are `--set` bindings (a fixed name needs no domain); `free_names` the family's free names when
    the caller already knows them (else the program is expanded once to find them).
    """
    fixed = dict(fixed or {})
    if free_names is None:
        free_names = _free_names(program, fixed)
    source = program.source
    let_bound = {b.key: b for s in program.statements if isinstance(s, n.Let) for b in s.bindings}
    problems: list[Diagnostic] = []

    def bad(node: n.Node, message: str, hint: str, fix: tuple[str, str] | None = None) -> None:
        problems.append(Diagnostic("search", message, source, node.span, help=hint, fix=fix))

    dims: list[Dimension] = []
    seen: dict[str, n.DomainDecl] = {}
    for stmt in program.statements:
        if not isinstance(stmt, n.Search):
            continue
        for decl in stmt.items:
            key = decl.key
            setting = key.lower() in SETTINGS
            if key in seen:
                bad(decl, f"`{key}` is searched twice", "keep one domain for it")
                continue
            seen[key] = decl
            if key in fixed:
                continue  # --set fixes it: the domain is not searched
            if not setting and key not in free_names:
                if key in let_bound:
                    line = let_bound[key].span.line
                    bad(decl, f"`{key}` is bound by `let` on line {line}, so it cannot be searched",
                        f"remove `{key}` from the `let` to make it a free name of the family")
                else:
                    guess = closest(key, list(free_names) + list(SETTINGS))
                    free = ", ".join(free_names) or "none"
                    bad(decl, f"`{key}` is neither a free name of the family nor a training setting",
                        (f"did you mean `{guess}`? " if guess else "") + f"the family's free names: {free}",
                        (key, guess) if guess else None)
                continue
            dim = _dimension(decl, setting, source, bad)
            if dim is not None:
                dims.append(dim)
    for key in free_names:
        if key not in seen and key not in fixed:
            where = next((s for s in program.statements if isinstance(s, n.Search)), None) or _main(program)
            example = f"search {key}" if key.endswith("?") else f"search {key} in ..."
            bad(where, f"the family's free name `{key}` has no domain",
                f"add `{example}` or bind it with --set")
    if problems:
        raise CnnError(tuple(problems))
    return Space(program, tuple(dims), free_names, fixed)


def _main(program: n.Program) -> n.Node:
    return next((s for s in program.statements if isinstance(s, n.Main)), program)


def _free_names(program: n.Program, fixed: Mapping[str, tuple[n.Expr, Source]]) -> tuple[str, ...]:
    from cnndsl.lang.expand import expand

    try:
        expand(program, dict(fixed))
    except CnnError as err:
        return err.free_names
    return ()


def _number(expr: n.Expr) -> float | None:
    if isinstance(expr, n.Unary) and expr.op == "-" and isinstance(expr.operand, (n.Int, n.Float)):
        return -expr.operand.value
    return expr.value if isinstance(expr, (n.Int, n.Float)) else None


def _dimension(decl: n.DomainDecl, setting: bool, source: Source, bad: Any) -> Dimension | None:
    """The dimension a declaration describes, or None after reporting what is wrong with it."""
    key, domain = decl.key, decl.domain
    if decl.optional:
        if domain is None:
            return Dimension(key, "bool", setting, decl.span)
        options = domain.options if isinstance(domain, n.Choices) else ()
        if not options or any(not (isinstance(o, n.Name) and o.id.lower() in ("true", "false")) for o in options):
            bad(domain, f"the optional part `{key}` takes true and/or false",
                f"write `search {key}` for both, or `search {key} in {{true}}`")
            return None
        if len(options) == 2 and options[0].id.lower() != options[1].id.lower():
            return Dimension(key, "bool", setting, decl.span)
        return Dimension(key, "choice", setting, domain.span, options=options[:1], texts=(options[0].id.lower(),))
    if domain is None:
        bad(decl, f"`{key}` needs a domain", f"e.g. `search {key} in 1..3` or `search {key} in {{a, b}}`")
        return None
    if isinstance(domain, n.IntRange):
        if domain.low > domain.high:
            bad(domain, f"the range {domain.low}..{domain.high} is empty", f"write it low..high: {domain.high}..{domain.low}")
            return None
        dim = Dimension(key, "int", setting, domain.span, low=domain.low, high=domain.high)
    elif isinstance(domain, n.Choices):
        if not domain.options:
            bad(domain, f"the domain of `{key}` is empty", f"list the values `{key}` may take: {{a, b}}")
            return None
        texts = tuple(" ".join(source.text_of(o.span).split()) for o in domain.options)
        duplicate = next((t for k, t in enumerate(texts) if t in texts[:k]), None)
        if duplicate is not None:
            bad(domain, f"`{duplicate}` is listed twice in the domain of `{key}`", "list each choice once")
            return None
        dim = Dimension(key, "choice", setting, domain.span, options=domain.options, texts=texts)
    else:
        assert isinstance(domain, n.Distribution)
        kind = domain.kind.lower()
        numbers = [_number(a) for a in domain.args]
        if kind not in ("log", "uniform"):
            guess = closest(kind, ["log", "uniform"])
            bad(domain, f"`{domain.kind}(...)` is not a domain",
                (f"did you mean `{guess}`? " if guess else "") + "numbers: `log(1e-4, 1e-2)`, `uniform(0.1, 0.5)`; "
                "integers: `1..3`; choices: `{a, b}`", (domain.kind, guess) if guess else None)
            return None
        if len(numbers) != 2 or domain.kwargs or any(v is None for v in numbers):
            bad(domain, f"`{kind}` takes two numbers, low and high", f"e.g. `{kind}(1e-4, 1e-2)`")
            return None
        low, high = numbers
        if not low < high or (kind == "log" and low <= 0):
            bad(domain, f"`{kind}({low:g}, {high:g})` is empty" if not low < high else "a log range must be above 0",
                "write low before high" if not low < high else "e.g. `log(1e-4, 1e-2)`")
            return None
        integer = all(isinstance(a, n.Int) for a in domain.args)
        dim = Dimension(key, "int" if integer else "float", setting, domain.span, low=low, high=high, log=kind == "log")
    if setting:  # every value must be a valid setting: check the ends of a range and each choice
        samples = [dim.expr(v) for v in ((dim.low, dim.high) if dim.kind in ("int", "float") else dim.values())]
        for expr in samples:
            _, problems = _setting(key.lower(), expr, source)
            for p in problems:
                bad(expr, f"in the domain of `{key}`: {p.message}", p.help or "")
            if problems:
                return None
        dim = dataclasses.replace(dim, name=key.lower())
    return dim
