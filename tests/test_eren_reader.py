"""EREN's readers through `load_reader`: causal chat readers whose tokenizer adds BOS and has no pad token
(as Llama-2-chat and Mistral-Instruct), a seq2seq reader (as FLAN-T5), and the reader model configs.

Tiny random models on SmolLM2's vocabulary, saved in Hugging Face layout to a tmp folder, with
tokenizers built here from SmolLM2's tokenizer.json (post-processor changed, pad token removed).
"""
from __future__ import annotations

import pytest
import torch

from conftest import REPO, model_dir
from robustedit.errors import ConfigError, ModelNotAvailableError
from robustedit.eren.reader import ChatReader, Seq2SeqReader, reader_kind
from robustedit.eren.reader_load import load_reader

BOS, EOS, UNK = "<|im_start|>", "<|im_end|>", "<|endoftext|>"  # ids 1, 2, 0 in SmolLM2's vocabulary
LLAMA2_TEMPLATE = ("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}")
# Different lengths, not sorted by length, so batches are padded and reordered.
PROMPTS = ["Who wrote Hamlet?", "A much longer prompt about the capital city of a small country in Europe", "Hi",
           "Read this and answer the question.\n\nParis is in Italy.\n\nWhere is Paris", "The Eiffel Tower is in"]


def smol_tokenizer(post: str, special: str, **tokens):
    """SmolLM2's tokenizer with post-processor `post` (one special token) and the given special tokens only."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer.from_file(str(model_dir("smollm2-135m") / "tokenizer.json"))
    tk.post_processor = processors.TemplateProcessing(single=post, special_tokens=[(special, tk.token_to_id(special))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, **tokens)


def chat_tokenizer(chat_template: str | None = LLAMA2_TEMPLATE):
    """As Llama-2's / Mistral's: prepends BOS, has eos and unk, no pad token, a [INST] chat template."""
    tok = smol_tokenizer(f"{BOS} $A", BOS, bos_token=BOS, eos_token=EOS, unk_token=UNK)
    tok.chat_template = chat_template
    return tok


def tiny_causal(family: str, vocab_size: int, n_layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}
    config_cls, model_cls = classes[family]
    torch.manual_seed(0)
    # initializer_range 0.2: outputs that differ from prompt to prompt (0.02 repeats tokens).
    cfg = config_cls(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                     bos_token_id=1, eos_token_id=2, pad_token_id=None, initializer_range=0.2)
    return model_cls(cfg).eval()


def tiny_t5(vocab_size: int):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    # initializer_factor 5: outputs that differ from prompt to prompt (1.0 repeats one token).
    cfg = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                   num_heads=4, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0, initializer_factor=5.0)
    return T5ForConditionalGeneration(cfg).eval()


def reader_cfg(name: str, family: str, n_layers: int = 2, add_bos: bool = True, chat_template: bool = True) -> dict:
    """The reader fields of a model config (conf/model/*.yaml holds them for the real readers)."""
    return {"name": name, "family": family, "n_layers": n_layers, "add_bos": add_bos, "chat_template": chat_template}


@pytest.fixture(scope="module")
def causal_dirs(tmp_path_factory):
    """{family: folder} of tiny Llama and Mistral readers with the Llama-2-style tokenizer."""
    from transformers import GenerationConfig

    out = {}
    for family in ("llama", "mistral"):
        path = tmp_path_factory.mktemp(family)
        tok = chat_tokenizer()
        model = tiny_causal(family, len(tok))
        # As Llama-2-chat's generation_config.json: sampling and a max_length; the reader is greedy regardless.
        model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=True, temperature=0.6,
                                                   top_p=0.9, max_length=4096)
        model.save_pretrained(path)
        tok.save_pretrained(path)
        out[family] = path
    return out


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A tiny T5 reader; the tokenizer appends EOS as T5's does and pads with id 0, as T5's."""
    path = tmp_path_factory.mktemp("t5")
    tok = smol_tokenizer(f"$A {EOS}", EOS, eos_token=EOS, pad_token=UNK, unk_token=UNK)
    tiny_t5(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def load(path, cfg, batch_size):
    return load_reader(path, cfg, device="cpu", dtype="float32", batch_size=batch_size)


def one_by_one(reader, prompts, max_new_tokens):
    return [reader.generate_ids([p], max_new_tokens)[0] for p in prompts]


@pytest.mark.parametrize("family", ["llama", "mistral"])
@pytest.mark.parametrize("chat_template", [True, False])
def test_causal_reader_without_pad_token_batched_equals_one_by_one(causal_dirs, family, chat_template):
    reader = load(causal_dirs[family], reader_cfg(f"tiny-{family}", family, chat_template=chat_template), 3)
    assert isinstance(reader, ChatReader) and reader.use_chat_template is chat_template
    tok = reader.tokenizer
    assert tok.pad_token_id is None  # as Llama-2 / Mistral: padding through the tokenizer would raise
    with pytest.raises(ValueError, match="pad"):
        tok(PROMPTS, padding=True)
    batched = reader.generate_ids(PROMPTS, max_new_tokens=6)  # batches of 3 and 2, left-padded
    assert batched == one_by_one(reader, PROMPTS, 6)  # token for token, in input order
    assert len({tuple(ids) for ids in batched}) == len(PROMPTS)  # distinct outputs: a mix-up would show
    assert all(len(ids) <= 6 for ids in batched) and max(len(ids) for ids in batched) == 6
    decoded = [t.strip() for t in tok.batch_decode(batched, skip_special_tokens=True)]
    assert reader.generate(PROMPTS, max_new_tokens=6) == decoded
    assert all(len(ids) <= 2 for ids in reader.generate_ids(PROMPTS, max_new_tokens=2))
    assert tok.pad_token_id is None and tok.padding_side == "right"  # the reader's tokenizer is untouched too
    # Exactly one BOS in what the model reads: from the template, or from the tokenizer without one.
    ids = tok(reader.format("Hi"), add_special_tokens=reader.add_special_tokens)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]
    assert reader.format("Hi") == (f"{BOS}[INST] Hi [/INST]" if chat_template else "Hi")


def test_chat_reader_leaves_the_callers_tokenizer_alone(causal_dirs):
    from transformers import AutoModelForCausalLM

    tok = chat_tokenizer()
    before = (tok.pad_token, tok.padding_side, tok.bos_token, tok.eos_token, tok.chat_template, len(tok))
    reader = ChatReader(AutoModelForCausalLM.from_pretrained(causal_dirs["llama"]), tok, batch_size=4)
    assert reader.pad_id == tok.eos_token_id  # no pad token: pad with eos (masked, so its value is irrelevant)
    reader.generate(PROMPTS, max_new_tokens=3)
    assert (tok.pad_token, tok.padding_side, tok.bos_token, tok.eos_token, tok.chat_template, len(tok)) == before


def test_seq2seq_reader_batched_equals_one_by_one_and_eren_generate(t5_dir):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    reader = load(t5_dir, reader_cfg("tiny-t5", "t5", add_bos=False, chat_template=False), 2)
    assert isinstance(reader, Seq2SeqReader) and reader.format("Hi") == "Hi"
    batched = reader.generate_ids(PROMPTS, max_new_tokens=6)
    assert batched == one_by_one(reader, PROMPTS, 6)
    assert len({tuple(ids) for ids in batched}) == len(PROMPTS)
    # EREN's call, prompt by prompt: model.generate(**tokenizer(prompt), max_length=6); its first token is
    # the decoder start token, so the budget leaves at most 5 answer tokens.
    model, tok = AutoModelForSeq2SeqLM.from_pretrained(t5_dir), AutoTokenizer.from_pretrained(t5_dir)
    for prompt, ids in zip(PROMPTS, batched):
        eren = model.generate(**tok([prompt], return_tensors="pt"), max_length=6)[0].tolist()
        assert eren[0] == model.config.decoder_start_token_id
        assert ids == (eren[1:eren.index(tok.eos_token_id)] if tok.eos_token_id in eren else eren[1:])
    assert all(len(ids) <= 5 for ids in batched) and max(len(ids) for ids in batched) == 5
    assert reader.generate(PROMPTS[:2], max_new_tokens=6) == [
        t.strip() for t in tok.batch_decode(batched[:2], skip_special_tokens=True)]


def test_bad_reader_configs_are_named(causal_dirs, t5_dir, tmp_path):
    llama, mistral = causal_dirs["llama"], causal_dirs["mistral"]
    with pytest.raises(ConfigError, match="model.family='gpt2' is unknown"):
        load(llama, reader_cfg("x", "gpt2"), 2)
    with pytest.raises(ConfigError, match="model.family=.llama. expects LlamaForCausalLM.*model_type .mistral."):
        load(mistral, reader_cfg("x", "llama"), 2)
    with pytest.raises(ConfigError, match="model.family='t5' expects T5ForConditionalGeneration"):
        load(llama, reader_cfg("x", "t5", chat_template=False), 2)
    with pytest.raises(ConfigError, match="model.n_layers=4"):
        load(llama, reader_cfg("x", "llama", n_layers=4), 2)
    with pytest.raises(ConfigError, match="add_bos=False but the tokenizer adds BOS"):
        load(llama, reader_cfg("x", "llama", add_bos=False), 2)
    with pytest.raises(ConfigError, match="seq2seq reader reads plain prompts.*model.chat_template"):
        load(t5_dir, reader_cfg("x", "t5", add_bos=False, chat_template=True), 2)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        load(llama, reader_cfg("x", "llama"), 0)
    with pytest.raises(ModelNotAvailableError, match="no reader model"):
        load(tmp_path / "missing", reader_cfg("x", "llama"), 2)
    no_template = tmp_path / "no_template"
    chat_tokenizer(chat_template=None).save_pretrained(no_template)
    tiny_causal("llama", len(chat_tokenizer())).save_pretrained(no_template)
    with pytest.raises(ConfigError, match="model.chat_template.*has no chat template"):
        load(no_template, reader_cfg("x", "llama"), 2)


@pytest.fixture()
def scripts():
    """The pipeline glue: config composition and the EREN stages' setup."""
    from robustedit.pipeline import config, eren

    return config, eren


@pytest.mark.parametrize("reader,kind", [("flan-t5-xl", "seq2seq"), ("llama2-7b-chat", "causal"),
                                         ("mistral-7b-instruct", "causal"), ("smollm2-135m", "causal")])
@pytest.mark.parametrize("hardware", ["cpu", "gpu"])
def test_reader_configs_compose(scripts, reader, kind, hardware):
    common, eren_common = scripts  # robustedit.pipeline.config, robustedit.pipeline.eren
    cfg = common.compose([f"eren.reader={reader}", f"hardware={hardware}"])
    model_cfg = eren_common.reader_model_cfg(cfg)
    assert model_cfg["name"] == reader and reader_kind(model_cfg) == kind
    assert model_cfg["source"]["kind"] == ("pypi_gguf" if reader == "smollm2-135m" else "hub")
    # rules/common.smk eren_reader asks for {paths.models}/{eren.reader}/SOURCE.json: this folder
    assert eren_common.reader_dir(cfg) == REPO.joinpath(cfg["paths"]["models"], reader).relative_to(REPO)


def test_seq2seq_model_is_a_reader_only(scripts):
    common, _ = scripts
    from hydra import compose, initialize_config_dir

    with pytest.raises(ConfigError, match="model=flan-t5-xl: model.family='t5' is a seq2seq reader"):
        common.compose(["model=flan-t5-xl"])
    # scripts/prepare_model.py (the prepare_model rule, which also prepares readers) accepts it
    with initialize_config_dir(config_dir=str(common.CONF), version_base=None):
        raw = compose(config_name="config", overrides=["model=flan-t5-xl"])
    assert common.validate(common.to_plain(raw), edit_model=False)["model"]["family"] == "t5"
    with pytest.raises(ConfigError, match="model.layer: None was expected"):
        common.compose(["model=flan-t5-xl", "model.layer=3"])
    for chat_model in ("llama2-7b-chat", "mistral-7b-instruct"):  # causal chat models may be edited too
        assert common.compose([f"model={chat_model}"])["model"]["layer"] == 5


@pytest.mark.parametrize("override,message", [
    ("eren.reader=flan-t5", r"eren.reader='flan-t5': no model config .*known: \[.*'flan-t5-xl'"),
    ("eren.reader=Flan", "eren.reader: 'Flan' does not match"),
])
def test_bad_eren_reader_is_named(scripts, override, message):
    common, _ = scripts
    with pytest.raises(ConfigError, match=message):
        common.compose([override])
