"""Subject indices and target tokens on the real Llama-style (no BOS) and Gemma (BOS) tokenizers."""
import pytest

from robustedit.errors import RecordError
from robustedit.tokens import subject_last_index, subject_last_index_by_prefix, target_token_ids

PROMPTS = [
    ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "Darrieux"),
    ("Danielle Darrieux's mother tongue is", "Danielle Darrieux", "Darrieux"),  # subject at position 0
    ("Toko Yasuda, the", "Toko Yasuda", "Yasuda"),
    ("  Apple A5 was created by", "Apple A5", "A5"),  # leading spaces before the subject
]


@pytest.mark.parametrize("tok_name", ["llama_tok", "gemma_tok"])
@pytest.mark.parametrize("text,subject,last_word", PROMPTS)
def test_subject_last_index_points_at_subject_end(request, tok_name, text, subject, last_word):
    tok = request.getfixturevalue(tok_name)
    ids = tok(text)["input_ids"]
    idx = subject_last_index(tok, text, subject)
    # the token at idx ends the subject: decoding up to and including it ends with the subject ...
    upto = tok.decode(ids[: idx + 1], skip_special_tokens=True)
    assert upto.rstrip().endswith(subject)
    # ... and the next token starts after it
    assert not tok.decode(ids[: idx], skip_special_tokens=True).rstrip().endswith(subject)
    assert idx == subject_last_index_by_prefix(tok, text, subject)


def test_bos_shifts_index_by_one(llama_tok, gemma_tok):
    text, subject = "Danielle Darrieux's mother tongue is", "Danielle Darrieux"
    assert gemma_tok(text)["input_ids"][0] == gemma_tok.bos_token_id
    assert llama_tok(text)["input_ids"][0] != llama_tok.bos_token_id
    # hand-checked pieces: Gemma [<bos>, Dan|ielle?...]; compare with the BOS-free count
    g = subject_last_index(gemma_tok, text, subject)
    n_subject_tokens = len(gemma_tok(subject, add_special_tokens=False)["input_ids"])
    assert g == n_subject_tokens  # BOS at 0, subject tokens 1..n
    lidx = subject_last_index(llama_tok, text, subject)
    assert lidx == len(llama_tok(subject)["input_ids"]) - 1


def test_subject_missing_or_empty_is_named(llama_tok):
    with pytest.raises(RecordError, match="case 7: subject 'Paris' not found"):
        subject_last_index(llama_tok, "The Eiffel Tower is in", "Paris", where="case 7: ")
    with pytest.raises(RecordError, match="empty subject"):
        subject_last_index(llama_tok, "The Eiffel Tower is in", "")


@pytest.mark.parametrize("tok_name", ["llama_tok", "gemma_tok"])
def test_clean_target_tokens_are_the_suffix_after_the_prompt(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    prompt, target = "Microsoft Office Mobile, created by", "Adobe Systems"
    ids = target_token_ids(tok, prompt, target, mode="clean")
    full = tok(prompt + " " + target)["input_ids"]
    assert full == tok(prompt)["input_ids"] + ids
    assert tok.decode(ids).strip() == target
    assert tok.bos_token_id not in ids


def test_easyedit_mode_keeps_no_bos(gemma_tok):
    ids = target_token_ids(gemma_tok, "Paris is in", "France", mode="easyedit")
    assert ids and ids[0] != gemma_tok.bos_token_id
    assert gemma_tok.decode(ids).strip() == "France"


def test_empty_target_is_an_error(llama_tok):
    with pytest.raises(RecordError, match="case 3: empty target"):
        target_token_ids(llama_tok, "Paris is in", "  ", where="case 3: ")
