"""EREN under the teacher-forced protocol (robustedit.eren.reader_scoring, robustedit.eren.teacher_forced).

Tiny random readers (causal Llama with a Llama-2-style [INST] template or none, seq2seq T5) from
test_eren_reader. Differential checks: batched teacher-forced scores against one unpadded forward per item
written here, and the reader's own greedy output read back teacher-forced is the argmax at every token.
"""
from __future__ import annotations

import pytest
import torch

from robustedit.errors import ConfigError, RecordError
from robustedit.eren.editor import ErenEditor
from robustedit.eren.encoder import HashEncoder
from robustedit.eren.evaluate import evaluate_methods
from robustedit.eren.notebook import Notebook
from robustedit.eren.reader import StubReader, TimedReader
from robustedit.eren.reader_scoring import answer_ids, score_answer_ids, score_answers
from robustedit.eren.robustness import edit_statement, robustness_items
from robustedit.eren.teacher_forced import answer_prompt, teacher_force
from test_eren_reader import PROMPTS, causal_dirs, load, reader_cfg, t5_dir  # noqa: F401 (fixtures)

TARGETS = ["Paris", "the city of London", "Danish", "Rome, Italy", "a"]


def reference_scores(reader, prompt: str, target: str) -> tuple[list[int], list[float]]:
    """One unpadded forward: argmax and log p of each answer token, written from the definition."""
    prompt_ids, target_ids = answer_ids(reader, prompt, target)
    with torch.no_grad():
        if reader.model.config.is_encoder_decoder:
            dec = torch.tensor([[reader.model.config.decoder_start_token_id] + target_ids[:-1]])
            logits = reader.model(input_ids=torch.tensor([prompt_ids]), decoder_input_ids=dec).logits[0]
        else:
            logits = reader.model(input_ids=torch.tensor([prompt_ids + target_ids])).logits[0]
            logits = logits[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(target_ids)]
    logp = torch.log_softmax(logits.float(), -1)
    return logits.argmax(-1).tolist(), [logp[j, t].item() for j, t in enumerate(target_ids)]


def readers(causal_dirs, t5_dir):  # noqa: F811
    return {"llama-chat": load(causal_dirs["llama"], reader_cfg("tiny-llama", "llama"), 2),
            "llama-plain": load(causal_dirs["llama"], reader_cfg("tiny-llama", "llama", chat_template=False), 2),
            "t5": load(t5_dir, reader_cfg("tiny-t5", "t5", add_bos=False, chat_template=False), 2)}


def test_batched_scores_equal_one_forward_per_item(causal_dirs, t5_dir):  # noqa: F811
    for name, reader in readers(causal_dirs, t5_dir).items():
        ids, scores = score_answers(TimedReader(reader), PROMPTS, TARGETS)  # wrappers are looked through
        for prompt, target, got_ids, got in zip(PROMPTS, TARGETS, ids, scores):
            argmax, logp = reference_scores(reader, prompt, target)
            assert got_ids == answer_ids(reader, prompt, target)[1], name
            assert got.argmax_ids == argmax, (name, prompt)
            assert got.logprobs == pytest.approx(logp, abs=1e-4), (name, prompt)


def test_answer_follows_the_readers_input():
    """After a chat template ending in white space the answer follows directly; otherwise after a space."""
    class Tok:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    class Chat:  # stands in for a ChatReader: only format, tokenizer and add_special_tokens are read
        tokenizer, add_special_tokens = Tok(), False

        def __init__(self, suffix):
            self.suffix = suffix

        def format(self, prompt):
            return prompt + self.suffix

    assert answer_ids(Chat("\nassistant\n"), "Q", "Paris")[1] == [ord(c) for c in "Paris"]
    assert answer_ids(Chat(" [/INST]"), "Q", "Paris")[1] == [ord(c) for c in " Paris"]
    with pytest.raises(RecordError, match="item 3: empty target"):
        answer_ids(Chat(""), "Q", " ", "item 3: ")


def test_the_readers_own_greedy_answer_is_the_argmax_at_every_token(causal_dirs, t5_dir):  # noqa: F811
    for name, reader in readers(causal_dirs, t5_dir).items():
        generated = reader.generate_ids(PROMPTS, max_new_tokens=5)
        prompt_ids = [answer_ids(reader, p, "x")[0] for p in PROMPTS]
        keep = [i for i, g in enumerate(generated) if g]
        assert keep, name
        scores = score_answer_ids(reader, [prompt_ids[i] for i in keep], [generated[i] for i in keep])
        assert [s.argmax_ids for s in scores] == [generated[i] for i in keep], name


def test_a_stub_reader_cannot_be_teacher_forced():
    with pytest.raises(ConfigError, match="StubReader has no model to teacher-force"):
        score_answers(TimedReader(StubReader(lambda p: "x")), ["Q"], ["A"])


def case(cid: int, subject: str, target: str) -> dict:
    return {"case_id": cid, "subject": subject, "prompt": f"The mother tongue of {subject} is",
            "target_new": target, "target_true": "French",
            "neighborhood_prompts": ["The mother tongue of Leon Blum is"],
            "locality_ground_truth": "French", "paraphrase_prompts": [], "patil_prompts": [],
            "subject_rephrases": {"id": [f"the actor {subject}"], "ood": []},
            "shuffled_subjects": {"id": [], "ood": []},
            "long_context": {"eval": "Unseen text.", "held": ["Held text."]}}


def test_teacher_force_reads_each_answer_after_the_prompt_eren_answered_from(causal_dirs):  # noqa: F811
    reader = load(causal_dirs["llama"], reader_cfg("tiny-llama", "llama"), 4)
    cases = [case(1, "Danielle Darrieux", "English"), case(2, "Anna Karina", "Danish")]
    notebook = Notebook(HashEncoder())
    notebook.add([edit_statement(c) for c in cases])
    items = robustness_items(cases, long_id_passages=1)
    results = {m: r.items for m, r in evaluate_methods(items, reader, notebook, "qa", ["eren"], k=2).items()}
    # the random reader never says "unanswerable": send half the items to step 2 as if it had
    for j, it in enumerate(results["eren"]):
        if j % 2:
            it["step"] = 2
    editor = ErenEditor(reader, notebook, "qa", "eren", k=2)
    scored = teacher_force(results, {"eren": editor}, reader)["eren"]
    assert len(scored) == len(items) and {it["step"] for it in scored} == {1, 2}
    for it in scored:
        prompt = answer_prompt(editor, it, notebook.notes)
        assert prompt == (editor.step1_prompt(it["input"], [notebook.notes[i] for i in it["note_ids"]])
                          if it["step"] == 1 else editor.closed_book_prompt(it["input"]))
        argmax, logp = reference_scores(reader, prompt, it["target"])
        pre_argmax, _ = reference_scores(reader, editor.closed_book_prompt(it["input"]), it["target"])
        assert it["argmax_ids"] == argmax and it["pre"]["argmax_ids"] == pre_argmax
        assert it["token_logprobs"] == pytest.approx(logp, abs=1e-4)
        want_em = float(argmax == it["target_ids"])
        assert it["exact_match@1"] == want_em and it["pre"]["locality_agreement@1"] == 1.0
        agree = sum(a == b for a, b in zip(argmax, pre_argmax)) / len(argmax)
        assert it["locality_agreement@1"] == pytest.approx(agree)
        if it["step"] == 2:  # closed-book: the unedited reader's answer, by construction
            assert it["argmax_ids"] == it["pre"]["argmax_ids"] and it["locality_agreement@1"] == 1.0
    assert {it["group"]: it["target"] for it in scored}["locality"] == "French"
    assert all(it["target"] == it["gold"] for it in scored if it["in_scope"])


def test_teacher_force_names_an_item_without_target(causal_dirs):  # noqa: F811
    reader = load(causal_dirs["llama"], reader_cfg("tiny-llama", "llama"), 4)
    item = {"id": 7, "group": "success", "input": "Q", "step": 2, "note_ids": []}
    with pytest.raises(RecordError, match=r"case_id 7 \(success"):
        teacher_force({"eren": [item]}, {"eren": ErenEditor(reader, None, "qa", "unedited")}, reader)
