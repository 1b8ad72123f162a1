"""The front end's hard limits, in one place: past each one a spec gets a located `limit` error, never
a hang, a crash or gigabytes of memory (docs/language.md, "Limits", lists them for users)."""

#: Largest spec file or text, in bytes (a spec is a few KB; this guards the parser and memory).
MAX_SOURCE_BYTES = 2_000_000

#: Deepest bracket nesting accepted by the parser.
MAX_NESTING = 100

#: Deepest expression nesting the evaluator accepts (`1 + 1 + ... + 1` with this many `+`, `- - - 1`).
MAX_EXPRESSION_DEPTH = 10_000

#: Largest number of layers a spec may expand to (the input not counted).
MAX_LAYERS = 100_000

#: Units of expansion work (an expression evaluated, a repetition step, a block applied) a spec may
#: spend beyond what its layers earn (WORK_PER_LAYER each). Bounds specs that repeat nothing many times
#: (`[[relu]*0]*100000` nested deeper) as MAX_LAYERS bounds the ones that repeat layers: well under a
#: second of work on a 2-core machine, while every legal network, the largest included, fits.
MAX_WORK = 250_000
WORK_PER_LAYER = 40

#: The largest integer the language holds: sizes, counts, intermediate values and every total.
INT64_MAX = 2**63 - 1
