"""robustedit: robust knowledge editing (ROME, REP, EREN) as a reproducible pipeline.

The library is pure: no Snakemake, no Hydra, no knowledge of the results layout.
Importing it has no side effects.
"""

__version__ = "0.1.0"
