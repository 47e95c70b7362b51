"""Ways to run ML Studio: `local` starts every process on this machine (the embedded default)."""
