"""The TextMate grammar of the language (editors/vscode/syntaxes/cnn.tmLanguage.json), built from the
language's own tables so a new builtin is highlighted everywhere at once:

    python -m cnndsl.editor.textmate > editors/vscode/syntaxes/cnn.tmLanguage.json

VS Code, Sublime Text, TextMate, GitHub's Linguist and Shiki read this format. Its token classes follow the
Pygments lexer's (`cnndsl.editor.highlight`); the tests tokenize every example with a TextMate engine and find
every character classified and no error scope.
"""

from __future__ import annotations

import json
from typing import Any

from cnndsl.lang.expand import FUNCTIONS
from cnndsl.lang.layers import BUILTINS, COMBINATORS, CONSTANTS

_NAME = "[A-Za-z_][A-Za-z0-9_]*"


def _words(words: Any) -> str:
    return "|".join(sorted(words, key=lambda w: (-len(w), w)))


def grammar() -> dict[str, Any]:
    """The grammar as a JSON object."""
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "cnn",
        "scopeName": "source.cnn",
        "fileTypes": ["cnn"],
        "patterns": [{"include": f"#{rule}"} for rule in (
            "comment", "statement-keyword", "block-definition", "head-definition", "path", "keyword", "map",
            "number", "builtin", "kwarg", "call", "name", "operator", "punctuation")],
        "repository": {
            "comment": {"match": "#.*$", "name": "comment.line.number-sign.cnn"},
            # `input 32x32x3` declares; `input -> ...` reads the input (a keyword either way)
            "statement-keyword": {"match": "(?i)^[ \\t]*(network|input|import|let|block|train|search)\\b(?![ \\t]*->)",
                                  "captures": {"1": {"name": "keyword.other.statement.cnn"}}},
            "block-definition": {"match": f"(?i)(?<=block)[ \\t]+({_NAME})",
                                 "captures": {"1": {"name": "entity.name.function.block.cnn"}}},
            # `head` and `training` are soft keywords: words only at a statement's start
            "head-definition": {"match": f"(?i)^[ \\t]*(?:(training)[ \\t]+)?(head)[ \\t]+({_NAME})(?=[ \\t]*=)",
                                "captures": {"1": {"name": "keyword.other.statement.cnn"},
                                             "2": {"name": "keyword.other.statement.cnn"},
                                             "3": {"name": "entity.name.function.head.cnn"}}},
            "path": {"match": "\"[^\"\\n]*\"?", "name": "string.quoted.double.path.cnn"},
            "keyword": {"match": "(?i)\\b(input|in|as|if|else|and|or|not)\\b", "name": "keyword.control.cnn"},
            "map": {"match": f"@{_NAME}", "name": "variable.other.map.cnn"},
            "number": {"patterns": [
                {"match": "\\b[0-9]+[ \\t]*\\.\\.[ \\t]*[0-9]+\\b", "name": "constant.numeric.range.cnn"},
                {"match": "\\b[0-9]+(?:[xX][0-9]+)+\\b", "name": "constant.numeric.size.cnn"},
                {"match": "(?:\\b[0-9]+\\.[0-9]*(?:[eE][+-]?[0-9]+)?|\\.[0-9]+(?:[eE][+-]?[0-9]+)?|"
                          "\\b[0-9]+[eE][+-]?[0-9]+)", "name": "constant.numeric.float.cnn"},
                {"match": "\\b[0-9]+\\b", "name": "constant.numeric.integer.cnn"}]},
            "builtin": {"patterns": [
                {"match": f"\\b({_words(BUILTINS)})\\b", "name": "support.function.layer.cnn"},
                {"match": f"\\b({_words(COMBINATORS)})\\b", "name": "support.function.combinator.cnn"},
                {"match": f"\\b({_words(FUNCTIONS)})(?=[ \\t]*\\()", "name": "support.function.math.cnn"},
                {"match": f"\\b({_words(CONSTANTS)})\\b", "name": "constant.language.cnn"}]},
            "kwarg": {"match": f"\\b({_NAME})[ \\t]*(?==(?!=))", "captures": {"1": {"name": "variable.parameter.cnn"}}},
            "call": {"match": f"\\b({_NAME})(?=[ \\t]*\\()", "captures": {"1": {"name": "entity.name.function.call.cnn"}}},
            "name": {"match": f"\\b{_NAME}\\b", "name": "variable.other.cnn"},
            "operator": {"patterns": [
                {"match": "->", "name": "keyword.operator.arrow.cnn"},
                {"match": "\\|", "name": "keyword.operator.branch.cnn"},
                {"match": "==|!=|<=|>=|<|>", "name": "keyword.operator.comparison.cnn"},
                {"match": "\\*\\*|\\*|//|/|%|\\+|-", "name": "keyword.operator.arithmetic.cnn"},
                {"match": "=", "name": "keyword.operator.assignment.cnn"},
                {"match": "\\?", "name": "keyword.operator.optional.cnn"},
                {"match": "\\\\$", "name": "constant.character.escape.line-continuation.cnn"}]},
            "punctuation": {"patterns": [
                {"match": "[()]", "name": "punctuation.parenthesis.cnn"},
                {"match": "[\\[\\]]", "name": "punctuation.section.group.cnn"},
                {"match": "[{}]", "name": "punctuation.section.braces.cnn"},
                {"match": ",", "name": "punctuation.separator.comma.cnn"}]},
        },
    }


def text() -> str:
    """The grammar file's text."""
    return json.dumps(grammar(), indent=2) + "\n"


if __name__ == "__main__":
    print(text(), end="")
