"""Shared fixtures: real tokenizers from the prepared small models, and tiny random models built
in-process on those tokenizers' vocabularies (fast, deterministic, no download)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "resources" / "models"


def model_dir(name: str) -> Path:
    """Folder of a prepared real model; prepared on first use (about 1-2 minutes each)."""
    path = MODELS / name
    # SOURCE.json is what the pipeline's prepare_model rule writes last; with it present Snakemake
    # treats the folder as prepared, so tests that plan the DAG never plan (or fake) a conversion.
    if not (path / "SOURCE.json").is_file():
        from omegaconf import OmegaConf

        from robustedit.io import write_json
        from robustedit.models.convert import prepare_model

        cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml"))
        info = prepare_model(cfg, path)
        write_json(path / "SOURCE.json", {"model": cfg, "prepared": info})
    return path


@pytest.fixture(scope="session")
def llama_tok():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir("smollm2-135m"))
    tok.padding_side = "right"
    return tok


@pytest.fixture(scope="session")
def gemma_tok():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir("gemma3-270m"))
    tok.padding_side = "right"
    return tok


def tiny_llama(vocab_size: int, seed: int = 0, n_layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_gemma(vocab_size: int, seed: int = 0, n_layers: int = 4):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        bos_token_id=2, eos_token_id=1, pad_token_id=0, sliding_window=64,
    )
    return Gemma3ForCausalLM(cfg).eval()


def tiny_model_cfg(family: str, n_layers: int = 4, layer: int = 1, add_bos: bool = False) -> dict:
    """A model description for a tiny model (what conf/model/*.yaml holds for real ones)."""
    return {"name": f"tiny-{family}", "family": family, "n_layers": n_layers, "layer": layer,
            "modules": {}, "add_bos": add_bos, "max_length": 512}


@pytest.fixture(scope="session")
def tiny_llama_model(llama_tok):
    return tiny_llama(len(llama_tok))


@pytest.fixture(scope="session")
def tiny_gemma_model(gemma_tok):
    return tiny_gemma(len(gemma_tok))


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
