"""Program generators for fuzzing the front end: shared by tests/lang/test_fuzz.py and benchmarks/fuzz.py.

- `grammar_programs()`: hypothesis's `from_lark` over grammar/cnn.lark, with every terminal drawn from a
  mix of the language's own words (so programs get past name lookup into expansion and shape inference)
  and random text of the terminal's pattern, tokens separated by spaces; half get a network header.
- `layer_programs()`: the language's layers and combinators nested at random (blocks, indexed and huge
  repetitions, branches, conditions), which reach expansion, shapes and the limits;
- `mutated_programs()`: the examples and the invalid corpus, each cut, duplicated, spliced with hostile
  tokens (huge numbers, deep repetitions, control characters, a byte-order mark) a few times.

`outcome(text)` checks one program and says how it ended; anything but a report or a `CnnError` with
located, printable diagnostics is an internal error.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

import cnndsl
from cnndsl.lang.errors import CnnError
from cnndsl.lang.parser import grammar_text

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.cnn"))
         + sorted((ROOT / "tests" / "invalid").glob("*.cnn"))]

WORDS = ["conv", "relu", "fc", "maxpool", "avgpool", "bn", "dropout", "concat", "add", "residual", "identity", "same",
         "valid", "true", "false", "global_avgpool", "flatten", "lrn", "leaky_relu", "softmax", "gelu", "N", "M", "K",
         "CONV", "POOL", "FC", "i", "j", "x", "stride", "pad", "groups", "dilation", "bias", "ceil", "filters",
         "kernel", "units", "rate", "shortcut", "count_pad", "epochs", "lr", "optimizer", "augment", "sgd", "crop"]
HOSTILE = ["2**(2**36)", "9**9**9", "*100000", "]*100000", "[[", "]]", "*0", " as i", " if false", "?", "\x00", "\ufeff",
           "\u2028", "\r", "\t", "\\\n", "99999999999999999999", "1e999", "-", "(", ")", "|", "->", ",", "=", "#",
           "input", "block b(c) = b(c)\n", "let N = N\n", "\n", "1x0", "0x0x0", "conv(0, 0x0)", "fc(-1)",
           "maxpool(9x9, ceil=true)", "\xe9", "\U0001f600"]


def _separated(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return strategy.map(lambda text: text + " ")


def _terminals(grammar: Lark) -> dict[str, st.SearchStrategy[str]]:
    """A strategy per terminal: mostly the language's own words and small sizes, sometimes random text."""
    out: dict[str, st.SearchStrategy[str]] = {}
    for terminal in grammar.terminals:
        pattern = terminal.pattern
        if pattern.type == "str":
            text = pattern.value
            words = [text, text.upper(), text.capitalize()] if "i" in pattern.flags else [text]
            strategy = st.sampled_from(words)
        else:
            random = st.from_regex(re.compile(pattern.value), fullmatch=True)
            common = {"NAME": st.sampled_from(WORDS), "INT": st.sampled_from(["0", "1", "2", "3", "4", "8", "16", "64"]),
                      "DIMS": st.sampled_from(["1x1", "2x2", "3x3", "7x7", "16x16x3", "8x8x1", "1x7", "0x3"]),
                      "FLOAT": st.sampled_from(["0.5", "0.1", "1e-3", "2.0"]), "_NL": st.just("\n")}.get(terminal.name)
            strategy = random if common is None else st.one_of(common, common, random)
        out[terminal.name] = strategy if terminal.name == "_NL" else _separated(strategy)
    return out


def _reachable(grammar: Lark, start: str) -> set[str]:
    """The terminals a derivation from rule `start` can produce (from_lark refuses strategies for others)."""
    seen, todo, terminals = {start}, [start], set()
    while todo:
        name = todo.pop()
        for rule in grammar.rules:
            if rule.origin.name != name:
                continue
            for symbol in rule.expansion:
                if symbol.is_term:
                    terminals.add(symbol.name)
                elif symbol.name not in seen:
                    seen.add(symbol.name)
                    todo.append(symbol.name)
    return terminals


def grammar_programs() -> st.SearchStrategy[str]:
    """Programs drawn from the grammar itself (see the module docstring): whole programs from `start`, and
    programs of a header, definitions from `let` and `block`, and a main chain from `value`, which get
    past the checks of a program's outline into expansion and shapes."""
    grammar = Lark(grammar_text(), parser="lalr", lexer="basic", start=["start", "value", "let", "block"])
    terminals = _terminals(grammar)
    rule = {name: from_lark(grammar, start=name, explicit={t: terminals[t] for t in _reachable(grammar, name)})
            for name in ("start", "value", "let", "block")}
    header = st.sampled_from(["network F\ninput 16x16x3\n", "network F\ninput 8x8x1\nlet N = 2\n", "input 4x4x2\n"])
    definitions = st.lists(st.one_of(rule["let"], rule["block"]).map(lambda text: text + "\n"), max_size=3).map("".join)
    outlined = st.tuples(header, definitions, st.just("input -> "), rule["value"]).map("".join)
    return st.one_of(outlined, rule["start"])


_SIZES = st.sampled_from(["1", "2", "3", "1x1", "3x3", "2x2", "5x5", "1x7", "N", "i", "i + 1", "2**i", "0", "N * 2"])
_LEAVES = st.one_of(
    st.builds("conv({}, {}, stride={}, pad={}, groups={}, dilation={})".format, st.sampled_from(["4", "8", "N", "16 * 2**i"]),
              _SIZES, st.sampled_from(["1", "2", "i + 1"]), st.sampled_from(["same", "valid", "1", "(0, 2)", "((1, 0), (0, 1))"]),
              st.sampled_from(["1", "2", "4"]), st.sampled_from(["1", "2"])),
    st.builds("{}pool({}, stride={}, ceil={})".format, st.sampled_from(["max", "avg"]), _SIZES,
              st.sampled_from(["1", "2", "3"]), st.sampled_from(["true", "false"])),
    st.sampled_from(["relu", "bn", "gelu", "dropout(0.5)", "identity", "global_avgpool", "flatten", "fc(10)",
                     "fc(N)", "lrn", "softmax", "leaky_relu(0.1)", "P?", "b(8)", "b(c=4)", "CONV"]),
)


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(inner, min_size=2, max_size=4).map(" -> ".join),
        st.builds("[{}]*{}".format, inner, st.sampled_from(["0", "1", "2", "N", "3 as i", "4 as i", "1000", "M"])),
        st.builds("concat({} | {})".format, inner, inner),
        st.builds("add({} | {})".format, inner, inner),
        st.builds("residual({})".format, inner),
        st.builds("residual({}, shortcut={})".format, inner, inner),
        st.builds("{} if {}".format, inner, st.sampled_from(["i < 2", "true", "N > 1", "i == 0 or i == 3"])),
        st.builds("[{}]".format, inner),
    )


def layer_programs() -> st.SearchStrategy[str]:
    """Programs built from the language's layers and combinators, nested at random (a directed walk over
    the grammar's `value` rule that from_lark's uniform one rarely takes): they reach expansion, shapes
    and the limits."""
    chain = st.recursive(_LEAVES, _compound, max_leaves=12)
    header = st.builds("network F\ninput {}\nlet N = {}, M = {}, i = 1, P = maxpool(2x2), P? = {}\n".format,
                       st.sampled_from(["16x16x3", "8x8x1", "32x32x3", "1x1x1", "224x224x3"]),
                       st.sampled_from(["1", "2", "3", "0"]), st.sampled_from(["2", "100", "100000"]),
                       st.sampled_from(["true", "false"]))
    blocks = st.builds("block b(c, s=1) = {}\n".format, chain)
    return st.tuples(header, blocks, chain).map(lambda parts: f"{parts[0]}{parts[1]}input -> {parts[2]}")


@st.composite
def mutated_programs(draw: st.DrawFn) -> str:
    """A seed program mutated a few times (see the module docstring)."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        how = draw(st.sampled_from(["delete", "duplicate", "insert", "insert", "number"]))
        if how == "delete":
            text = text[:start] + text[end:]
        elif how == "duplicate":
            text = text[:end] + text[start:end] * draw(st.integers(1, 30)) + text[end:]
        elif how == "insert":
            text = text[:start] + draw(st.sampled_from(HOSTILE + WORDS)) + text[start:]
        else:
            numbers = list(re.finditer(r"\d+", text))
            if numbers:
                found = draw(st.sampled_from(numbers))
                new = draw(st.sampled_from(["0", "1", "100000", "2**62", "99999999999999999999", "4096 * 4096"]))
                text = text[: found.start()] + new + text[found.end():]
    return text


def outcome(text: str) -> str:
    """Check one program: `valid`, or `error[kinds]`; an AssertionError describes anything else."""
    try:
        report = cnndsl.check(text)
    except CnnError as err:
        rendered = err.render()
        bad = [c for c in rendered if (c < " " and c != "\n") or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029"]
        assert not bad, f"raw control characters {bad!r} in:\n{rendered}"
        for d in err.diagnostics:
            assert d.source is None or d.span is not None, f"a diagnostic without a position:\n{d.render()}"
        return "error[" + ",".join(sorted(set(err.kinds))) + "]"
    report.to_dict()
    report.render_table()
    return "valid"
