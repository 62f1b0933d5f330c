"""Model families by description: the shipped qwen2.5-7b (family custom: Qwen2ForCausalLM, model_type qwen2)
and llama3-8b (the llama preset, a Llama-3 tokenizer) configs describe tiny random models of their class,
saved in Hugging Face layout, which then run through loading, ROME, REP and the evaluation suite.

The tiny models are described ONLY by the shipped YAML files, composed with `model.n_layers=4 model.layer=1`.
Their tokenizers are SmolLM2's byte-level BPE (offline) with the real models' special-token behaviour:
Qwen-like (no BOS, pad = eos = <|endoftext|>) and Llama-3-like (BOS prepended, no pad token).
"""
from __future__ import annotations

import re

from types import SimpleNamespace

import pytest
import torch

from conftest import model_dir
from offline_hub import bos_tokenizer
from robustedit.edits import apply_rank_one, restore
from robustedit.errors import ConfigError
from robustedit.eren.reader import ChatReader, reader_kind
from robustedit.eren.reader_load import load_reader
from robustedit.evaluate import evaluate_cases
from robustedit.evaluate.leakage import leak_guard
from robustedit.hooks import capture_input, capture_output
from robustedit.models.arch import Architecture
from robustedit.models.load import load_model
from robustedit.rep import RepEditBatch, RepTrainConfig, fit_rep_adaptor
from robustedit.rome import (MomentSolver, ROMEHyperParams, compute_second_moment, execute_rome_detailed,
                             generate_context_templates)
from robustedit.seeding import torch_generator
from robustedit.tokens import subject_last_index
from test_evaluate import make_case

MODELS = ["qwen2.5-7b", "llama3-8b"]
SHIPPED = {"qwen2.5-7b": (28, 4, "Qwen2ForCausalLM"), "llama3-8b": (32, 5, "LlamaForCausalLM")}  # layers, edit layer
TINY = ["model.n_layers=4", "model.layer=1"]
LAYER, KEY_DIM = 1, 96  # the tiny models' edit layer and MLP width (ROME's key dimension)
REQUESTS = [
    {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "target_new": "English"},
    {"case_id": 1, "prompt": "Toko Yasuda, a native speaker of", "subject": "Toko Yasuda", "target_new": "Russian"},
]
CASES = [make_case(0), make_case(1, "Toko Yasuda", "{}, a native speaker of", "Russian", "Japanese", n_held=1)]
# 4 v* steps, learning rates for a tiny random model (as tests/test_rome_core.py); 6 templates
HP = ROMEHyperParams(v_num_grad_steps=4, v_lr=0.05, v_weight_decay=1e-6, clamp_norm_factor=1000.0,
                     early_stop_loss=None, context_template_length_params=((5, 5),), batch_cases=2)


@pytest.fixture(scope="module")
def common():
    """The pipeline glue (compose, stage_dir)."""
    from robustedit.pipeline import config, stage

    return SimpleNamespace(compose=config.compose, stage_dir=stage.stage_dir)


@pytest.fixture(scope="module")
def described(common):
    """{name: model config}: the shipped YAML with the tiny layer count and edit layer, as composed for a run."""
    return {name: common.compose([f"model={name}", *TINY])["model"] for name in MODELS}


def qwen_tokenizer():
    """As Qwen2.5's: no BOS token, nothing prepended, eos = pad = <|endoftext|>."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer.from_file(str(model_dir("smollm2-135m") / "tokenizer.json"))
    t.post_processor = None  # SmolLM2's template processing would be the only source of added tokens
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_model(name: str, tok, seed: int):
    """A random model of the class the shipped config describes, with tiny widths and 4 layers."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=KEY_DIM, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=False)
    if name == "qwen2.5-7b":
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    return LlamaForCausalLM(LlamaConfig(**common)).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{name: Hugging Face folder} of the tiny stand-ins (config.json, safetensors, tokenizer)."""
    base = model_dir("smollm2-135m") / "tokenizer.json"
    out = {}
    for seed, name in enumerate(MODELS):
        tok = qwen_tokenizer() if name == "qwen2.5-7b" else bos_tokenizer(base, chat=False)
        path = tmp_path_factory.mktemp(name)
        tiny_model(name, tok, seed).save_pretrained(path)
        tok.save_pretrained(path)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def loaded(folders, described):
    return {name: load_model(folders[name], described[name]) for name in MODELS}


# ---------------------------------------------------------------- the shipped configs
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("hardware", ["cpu", "gpu"])
def test_shipped_configs_compose(common, name, hardware):
    cfg = common.compose([f"model={name}", f"hardware={hardware}"])
    model = cfg["model"]
    n_layers, layer, hf_class = SHIPPED[name]
    assert (model["n_layers"], model["layer"], cfg["hardware"]["name"]) == (n_layers, layer, hardware)
    arch = Architecture.from_config(model)
    assert arch.family.hf_class == hf_class and arch.name("down_proj", layer) == f"model.layers.{layer}.mlp.down_proj"
    assert model["source"]["kind"] == "hub" and re.fullmatch("[0-9a-f]{40}", model["source"]["revision"])
    assert cfg["data"]["split_files"]["test"].endswith("_llama2-7b.json")
    assert str(common.stage_dir(cfg, "rome", "valid")).startswith(f"results/{name}/rome/")


# ---------------------------------------------------------------- loading
def test_described_models_load_as_described(loaded):
    qwen, llama3 = loaded["qwen2.5-7b"], loaded["llama3-8b"]
    assert type(qwen.model).__name__ == "Qwen2ForCausalLM" and qwen.model.config.model_type == "qwen2"
    assert type(llama3.model).__name__ == "LlamaForCausalLM"
    assert qwen.tokenizer.pad_token == "<|endoftext|>" and qwen.tokenizer.bos_token_id is None  # its own pad
    assert llama3.tokenizer.pad_token == llama3.tokenizer.eos_token == "</s>"  # pad: eos
    assert llama3.tokenizer("Paris")["input_ids"][0] == llama3.tokenizer.bos_token_id  # add_bos: true
    assert all(lm.arch.key_dim(lm.model, LAYER) == KEY_DIM for lm in (qwen, llama3))
    assert qwen.arch.label == "Qwen2ForCausalLM" and llama3.arch.label == "llama"


def test_pad_none_sets_no_pad_token(folders, described):
    lm = load_model(folders["llama3-8b"], {**described["llama3-8b"], "pad": "none"})
    assert lm.tokenizer.pad_token_id is None


def with_(cfg: dict, **changes) -> dict:
    return {**cfg, **changes}


@pytest.mark.parametrize("model,folder,changes,message", [
    ("qwen2.5-7b", "qwen2.5-7b", {"hf_class": "Qwen3ForCausalLM"},
     r"expects Qwen3ForCausalLM, loaded Qwen2ForCausalLM \(model.hf_class"),
    ("qwen2.5-7b", "llama3-8b", {}, r"model_type in \('qwen2',\), got 'llama' \(model.model_types"),
    ("llama3-8b", "qwen2.5-7b", {}, r"family 'llama' expects model_type in \('llama',\), got 'qwen2' \(model.family"),
    ("qwen2.5-7b", "qwen2.5-7b", {"pad": "eos"},
     r"model.pad='eos' says the tokenizer has no pad token, but it has '<\|endoftext\|>'; set model.pad"),
    ("qwen2.5-7b", "qwen2.5-7b", {"pad": "none"}, r"model.pad='none' says the tokenizer has no pad token"),
    ("llama3-8b", "llama3-8b", {"pad": "<|end_of_text|>"},
     r"model.pad='<\|end_of_text\|>' but the tokenizer's pad token is None; set model.pad: eos"),
    ("llama3-8b", "llama3-8b", {"add_bos": False}, r"model.add_bos=False but the tokenizer adds BOS"),
    ("qwen2.5-7b", "qwen2.5-7b", {"add_bos": True}, r"model.add_bos=True but the tokenizer does not add BOS"),
    ("llama3-8b", "llama3-8b", {"n_layers": 5}, r"model.n_layers=5 but the loaded model has 4 layers"),
])
def test_mismatched_description_is_named(folders, described, model, folder, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_model(folders[folder], with_(described[model], **changes))


@pytest.mark.parametrize("modules,message", [
    ({"down_proj": "model.layers.{}.mlp.nope"}, r"'model.layers.0.mlp.nope' \(down_proj\) not found .*model.modules"),
    ({"down_proj": "model.layers.{}.mlp.up_proj"}, r"model.modules.down_proj: .* in_features=64, .* is 96"),
    ({"down_proj": "model.layers.{}.self_attn.o_proj"}, r"model.modules.down_proj: .* not inside model.modules.mlp"),
    ({"down_proj": "model.layers.{}.mlp.act_fn"}, r"model.modules.down_proj: .* is a SiLU"),
    ({"layer": "model.layers.0.{}"}, r"model.modules.layer"),
    ({"layers": "model"}, r"model.modules.layers: 'model' is a Qwen2Model"),
])
def test_wrong_module_templates_are_named(loaded, described, modules, message):
    arch = Architecture.from_config(with_(described["qwen2.5-7b"], modules=modules))
    with pytest.raises(ConfigError, match=message):
        arch.check(loaded["qwen2.5-7b"].model)


def test_family_fields_are_checked(described):
    qwen = described["qwen2.5-7b"]
    with pytest.raises(ConfigError, match="model.family='custom' needs model.hf_class"):
        Architecture.from_config({k: v for k, v in qwen.items() if k != "hf_class"})
    with pytest.raises(ConfigError, match="needs model.model_types"):
        Architecture.from_config(with_(qwen, model_types="qwen2"))
    with pytest.raises(ConfigError, match="model.family='llama' is a preset .*drop model.hf_class"):
        Architecture.from_config(with_(described["llama3-8b"], hf_class="LlamaForCausalLM"))


# ---------------------------------------------------------------- ROME, REP and evaluation
def spd(dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, 3 * dim, generator=g, dtype=torch.float64)
    return a @ a.T / (3 * dim)


def rome_edits(lm, templates):
    return execute_rome_detailed(lm.model, lm.tokenizer, lm.arch, REQUESTS, MomentSolver(spd(KEY_DIM)), templates,
                                 HP, "cpu", LAYER)


def assert_edit_maps_k_star_to_v_star(lm, edit, res, request):
    down = lm.arch.module(lm.model, "down_proj", LAYER)
    enc = lm.tokenizer(request["prompt"], return_tensors="pt")
    idx = subject_last_index(lm.tokenizer, request["prompt"], request["subject"])
    saved = apply_rank_one(down, edit)
    try:
        with torch.no_grad(), capture_input(down) as cin, capture_output(down) as cout:
            lm.model(**enc)
    finally:
        restore(down, saved)
    torch.testing.assert_close(cin.value[0, idx], res.k_star)
    torch.testing.assert_close(cout.value[0, idx], res.v_star, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_rome_rep_and_evaluation_run_on_described_models(loaded, name):
    lm = loaded[name]
    texts = ["Paris is the capital of France.", "The cat sat on the mat.", "Hello"]
    moment = compute_second_moment(lm.model, lm.tokenizer, lm.arch, LAYER, texts, device="cpu").moment
    assert moment.shape == (KEY_DIM, KEY_DIM) and torch.allclose(moment, moment.T)
    templates = generate_context_templates(lm.model, lm.tokenizer, torch_generator(0, "templates"),
                                           length_params=((5, 5),), device="cpu")
    out = rome_edits(lm, templates)
    for (edit, res), request in zip(out, REQUESTS):
        assert edit.u.shape == (KEY_DIM,) and res.losses[-1] < res.losses[0]  # v* learns the new target
        assert_edit_maps_k_star_to_v_star(lm, edit, res, request)
    edits = [edit for edit, _ in out]
    down = lm.arch.module(lm.model, "down_proj", LAYER)
    fit = fit_rep_adaptor(lm.model, lm.tokenizer, down, CASES[0], templates, edits[0].u,
                          leaks=leak_guard(lm.tokenizer, CASES[0]),
                          tcfg=RepTrainConfig(steps=2, batch_size=4), seed=0)
    rep = RepEditBatch(lm.model, lm.arch, LAYER, edits, [fit.state, None], "cpu")
    rome_res = evaluate_cases(lm.model, lm.tokenizer, lm.arch, CASES, edits, 8, "cpu", long_id_passages=1)
    rep_res = evaluate_cases(lm.model, lm.tokenizer, lm.arch, CASES, rep, 8, "cpu", long_id_passages=1,
                             pre_from=rome_res)
    for res in (rome_res, rep_res):
        assert [r["case_id"] for r in res] == [0, 1]
        success = [it for r in res for it in r["items"] if it["group"] == "success"]
        # the edit raises the new object's log-probability on the edit prompt itself
        assert all(sum(it["token_logprobs"]) > sum(it["pre"]["token_logprobs"]) for it in success)
    assert rep_res[1] == rome_res[1]  # case 1 has no adaptor: ROME+REP is ROME there


def test_reader_accepts_a_described_family(folders, described):
    cfg = described["qwen2.5-7b"]
    assert reader_kind(cfg) == "causal"
    reader = load_reader(folders["qwen2.5-7b"], cfg, device="cpu", dtype="float32", batch_size=2)
    assert isinstance(reader, ChatReader)
    assert len(reader.generate(["Who wrote Hamlet?", "Hi"], max_new_tokens=3)) == 2
