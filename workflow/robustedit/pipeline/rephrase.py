"""Config -> subject rephrases from an LLM (cached on disk; see robustedit.data.rephrase)."""
from __future__ import annotations

import os
from pathlib import Path

from robustedit.data.rephrase import RephraseCache, generate_rephrases
from robustedit.data.rephrase_backends import ApiBackend, LocalChatBackend
from robustedit.errors import ConfigError
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.paths import conf_dir


def make_backend(cfg: dict):
    rp = cfg["data"]["rephrase"]
    if rp["backend"] == "api":
        api = rp["api"]
        key = os.environ.get(api["api_key_env"]) if api.get("api_key_env") else None
        return ApiBackend(api["base_url"], api["model"], key, timeout_s=api["timeout_s"],
                          max_tokens=rp["max_new_tokens"])
    if rp["backend"] == "local":
        name = rp["local"]["model"]
        model_cfg_path = conf_dir() / "model" / f"{name}.yaml"
        if not model_cfg_path.is_file():
            raise ConfigError(f"data.rephrase.local.model={name!r} has no conf/model/{name}.yaml")
        from omegaconf import OmegaConf

        model_cfg = OmegaConf.to_container(OmegaConf.load(model_cfg_path), resolve=True)
        hw = cfg["hardware"]
        lm = load_model(Path(cfg["paths"]["models"]) / name, model_cfg, hw["device"], hw["dtype"])
        return LocalChatBackend(lm.model, lm.tokenizer, resolve_device(hw["device"]), model_name=name,
                                max_new_tokens=rp["max_new_tokens"], batch_size=hw["batch_size"])
    raise ConfigError(f"data.rephrase.backend={rp['backend']!r}; use 'local' or 'api'")


def rephrases_for(cfg: dict, subjects: list[str]) -> tuple[dict[str, list[str]], str, dict]:
    """Rephrases of each subject, the source label, and cache statistics."""
    rp = cfg["data"]["rephrase"]
    backend = make_backend(cfg)
    run = generate_rephrases(subjects, backend, RephraseCache(rp["cache_dir"]), rp["prompt"], rp["n"],
                             allow_generate=rp["allow_generate"])
    stats = {"llm_backend": backend.name, "cache_hits": run.hits, "cache_misses": run.misses,
             "short_lists": len(run.short), "cache_file": str(run.cache_file)}
    print(f"[cases] rephrases from {backend.name}: {run.hits} cached, {run.misses} generated", flush=True)
    return run.rephrases, f"llm:{backend.name}", stats
