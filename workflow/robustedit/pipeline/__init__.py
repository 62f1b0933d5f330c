"""Pipeline glue between Hydra, Snakemake and the library (the top layer): where conf/ is (`paths`),
compose + validate the config (`config`), name and run stage directories (`stage`), the EREN stages'
shared setup (`eren`), LLM rephrases (`rephrase`) and the pieces several stage scripts share
(`evaluate`, `analysis`, `tables`)."""
