"""Families as design spaces: their domains (`space`), their members checked statically (`family`), and the
Optuna search over them (`sweep`, imported lazily: Optuna is an optional engine)."""
