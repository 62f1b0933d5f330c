"""Data construction: CounterFact cases and their robustness perturbations."""
