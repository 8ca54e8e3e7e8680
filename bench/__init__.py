"""Side-by-side benchmarks; each prints its figure, a reference measured in the same run,
and their ratio. Run with ``make bench`` or ``python -m bench``."""
