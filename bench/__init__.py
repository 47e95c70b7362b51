"""ML Studio's benchmarks (`python -m bench`, `make bench`): the product's performance goals
(issue 8) measured side by side in one run, against a local stack of its own, with the results
written to bench/results/latest.{json,md,png}."""
