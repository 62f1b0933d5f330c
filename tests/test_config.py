"""Config composition for every model x hardware pair, stage hashing, and the architecture adapter."""
import itertools

import pytest

from conftest import tiny_model_cfg

from robustedit.pipeline.config import compose  # noqa: E402
from robustedit.pipeline.stage import stage_dir  # noqa: E402

from robustedit.errors import ConfigError  # noqa: E402
from robustedit.models.arch import Architecture  # noqa: E402
from robustedit.stages import hashed_keys  # noqa: E402
from robustedit.hashing import stage_hash  # noqa: E402

MODELS = ["smollm2-135m", "gemma3-270m", "llama2-7b", "mistral-7b"]
HARDWARE = ["cpu", "gpu"]


@pytest.mark.parametrize("model,hardware", list(itertools.product(MODELS, HARDWARE)))
def test_every_model_and_hardware_composes(model, hardware):
    cfg = compose([f"model={model}", f"hardware={hardware}"])
    assert cfg["model"]["name"] == model and cfg["hardware"]["name"] == hardware
    arch = Architecture.from_config(cfg["model"])
    assert arch.name("down_proj", cfg["model"]["layer"]) == f"model.layers.{cfg['model']['layer']}.mlp.down_proj"
    assert str(stage_dir(cfg, "cases", "valid")).startswith(f"results/{model}/cases/")


def test_paper_layers_and_test_files():
    assert compose(["model=llama2-7b"])["model"]["layer"] == 5
    assert compose(["model=mistral-7b"])["data"]["split_files"]["test"].endswith("_mistral.json")
    assert compose([])["model"]["name"] == "smollm2-135m"


def test_stage_hash_examples():
    """A few cases by hand; tests/test_stage_hashes.py checks every key of every stage."""
    base = compose(["job.split=valid"])  # cases (and what consumes them) have one directory per split
    h = stage_hash(base, "cases")
    assert stage_hash(compose(["model.layer=7", "job.split=valid"]), "cases") == h  # cases do not read the edit layer
    assert stage_hash(compose(["hardware.batch_size=3", "job.split=valid"]), "cases") == h  # nor batch sizes
    assert stage_hash(compose(["data.shuffle.n=4", "job.split=valid"]), "cases") != h
    assert stage_hash(compose(["seed=1", "job.split=valid"]), "cases") != h
    assert stage_hash(compose(["model=gemma3-270m", "job.split=valid"]), "cases") != h
    assert stage_hash(base, "cases", "test") != h  # another split: another directory
    assert "model.layer" not in hashed_keys(base, "cases") and "model.source.kind" in hashed_keys(base, "cases")


@pytest.mark.parametrize("overrides,message", [
    (["model=nope"], "Could not find 'model/nope'"),
    (["model.layer=30"], "layer 30 is out of range for a 30-layer llama model"),
    (["model.layer=abc"], "model.layer: 'abc' is not of type 'integer'"),
    (["hardware.dtype=int8"], "hardware.dtype: 'int8' is not one of"),
    (["data.splits=[train]"], "data.splits: split 'train' is not in data.split_files"),  # any key of it
    (["eval.report_split=heldout"], "eval.report_split: split 'heldout' is not in data.split_files"),
    (["eval.generation.skip_splits=[vaild]"], "eval.generation.skip_splits: split 'vaild' is not in data.split_files"),
    (["data.rephrase.prompt=no placeholder"], "data.rephrase.prompt"),
    (["model.family=gpt2"], "model.family: 'gpt2' is not one of"),
    (["+rome.foo=1"], "rome.foo: unknown key"),  # every fixed group is closed (conf/schema.json)
    (["+data.max_case=2"], r"data.max_case: unknown key \(data has: .*max_cases"),
    (["+stats.hub.revision=x"], "stats.hub.revision: unknown key"),
])
def test_bad_config_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose(overrides)


def test_architecture_checks_loaded_model(tiny_llama_model, tiny_gemma_model):
    Architecture("llama", 4).check(tiny_llama_model)
    Architecture("gemma3", 4).check(tiny_gemma_model)
    with pytest.raises(ConfigError, match="expects Gemma3ForCausalLM, loaded LlamaForCausalLM"):
        Architecture("gemma3", 4).check(tiny_llama_model)
    with pytest.raises(ConfigError, match="n_layers=5 but the loaded model has 4 layers"):
        Architecture("llama", 5).check(tiny_llama_model)
    with pytest.raises(ConfigError, match="unknown"):
        Architecture("gpt2", 4)
    with pytest.raises(ConfigError, match="not found in LlamaForCausalLM"):
        Architecture("llama", 4, {"down_proj": "model.layers.{}.mlp.nope"}).module(tiny_llama_model, "down_proj", 1)
    arch = Architecture.from_config(tiny_model_cfg("llama"))
    assert arch.key_dim(tiny_llama_model, 1) == tiny_llama_model.config.intermediate_size
