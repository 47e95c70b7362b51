"""The benchmark scenarios of issue 8, one module each; each `run(context)` returns its result
dict (the keys the issue names, plus `goals`), measuring and never asserting."""
