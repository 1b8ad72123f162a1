"""The language's tooling for editors and documents: highlighting (`cnndsl.editor.highlight`, a Pygments lexer).

It stands on the front end alone (`cnndsl.lang`): nothing here runs JAX.
"""
