"""EREN inference with a stub reader: exact prompts, two-step logic, one-step and unedited baselines,
FEVER options, batched == unbatched; the chat reader's left-padded batches on a tiny random model."""
from __future__ import annotations

import pytest

from robustedit.errors import ConfigError
from robustedit.eren.editor import ErenEditor
from robustedit.eren.encoder import HashEncoder
from robustedit.eren.notebook import Notebook
from robustedit.eren.reader import ChatReader, StubReader

NOTES = ["Danielle Darrieux's mother tongue is English.", "The Toyota Cresta is developed by BMW.",
         "Aerosvit Airlines was founded in Paris."]


def _answer(prompt: str) -> str:
    """A reader that answers from the notes when the question's subject is in the prompt's context."""
    if prompt.startswith("Please answer this question: "):
        return "closed:" + prompt.split(": ", 1)[1]
    if prompt.startswith("Is it true that "):
        return "yes"
    if "Who developed the Toyota Cresta?" in prompt:
        return "BMW"
    if "mother tongue" in prompt and "Darrieux" in prompt.rsplit("\n\n", 1)[-1]:
        return "English"
    if "OPTIONS" in prompt:
        return "It's impossible to say." if "It's impossible" in prompt else "No"
    return "Unanswerable."


def _editor(method="eren", task="qa", k=5, reader=None):
    nb = Notebook(HashEncoder())
    nb.add(NOTES)
    return ErenEditor(reader or StubReader(_answer), nb, task, method, k)


def test_step1_prompt_is_erens_template():
    ed = _editor(k=2)
    q = "Who developed the Toyota Cresta?"
    notes = [h.note for h in ed.notebook.search([q], 2)[0]]
    assert notes[0] == "The Toyota Cresta is developed by BMW"
    expected = ('Read this and answer the question. If the question is unanswerable, say "unanswerable".\n\n'
                + ".\n".join(notes) + ".\n\n" + q)
    assert ed.step1_prompt(q, notes) == expected
    assert ed.closed_book_prompt(q) == "Please answer this question: " + q
    one = _editor("one_step")
    assert one.step1_prompt(q, ["A", "B"]) == "Read this and answer the question.\n\nA.\nB.\n\n" + q


def test_two_step_keeps_answerable_and_falls_back_on_unanswerable():
    reader = StubReader(_answer)
    ed = _editor(reader=reader)
    qs = ["Who developed the Toyota Cresta?", "What is the capital of Peru?"]
    a, b = ed.answer(qs)
    assert (a.output, a.step, a.step1_output) == ("BMW", 1, "BMW")
    assert (b.output, b.step, b.step1_output) == ("closed:What is the capital of Peru?", 2, "Unanswerable.")
    assert a.note_ids[0] == 1 and len(a.note_ids) == 3  # k=5 clamped to the 3 notes
    # one reader call for step 1 (both prompts), one for step 2 (only the unanswerable one)
    assert len(reader.calls) == 2 and len(reader.calls[0]) == 2
    assert reader.calls[1] == ["Please answer this question: What is the capital of Peru?"]


def test_one_step_never_falls_back_and_unedited_never_reads_notes():
    q = "What is the capital of Peru?"
    assert [(x.output, x.step) for x in _editor("one_step").answer([q])] == [("Unanswerable.", 1)]
    reader = StubReader(_answer)
    unedited = ErenEditor(reader, None, "qa", "unedited")
    ans = unedited.answer([q])[0]
    assert (ans.output, ans.step, ans.step1_output, ans.note_ids) == ("closed:" + q, 0, None, [])
    assert reader.calls == [["Please answer this question: " + q]]


def test_known_closed_book_outputs_are_reused():
    reader = StubReader(_answer)
    ed = _editor(reader=reader)
    q = "What is the capital of Peru?"
    assert ed.answer([q], closed_book={q: "Lima"})[0].output == "Lima"
    assert len(reader.calls) == 1  # step 1 only


def test_empty_notebook_goes_closed_book():
    reader = StubReader(_answer)
    ed = ErenEditor(reader, Notebook(HashEncoder()), "qa", "eren")
    ans = ed.answer(["Who developed the Toyota Cresta?"])[0]
    assert (ans.step, ans.step1_output, ans.note_ids) == (2, None, [])
    assert reader.calls == [["Please answer this question: Who developed the Toyota Cresta?"]]


def test_nli_prompts_options_and_fallback():
    tokens = []

    class Recording(StubReader):
        def generate(self, prompts, max_new_tokens=20):
            tokens.append(max_new_tokens)
            return super().generate(prompts, max_new_tokens)

    ed = _editor(task="nli", reader=Recording(_answer), k=1)
    claim = "Aerosvit Airlines was founded in Kyiv."
    p = ed.step1_prompt(claim, ["Aerosvit Airlines was founded in Paris"])
    assert p == ('Aerosvit Airlines was founded in Paris.\n\nCan we conclude that "Aerosvit Airlines was founded in '
                 'Kyiv."?\n\nOPTIONS:\n- Yes\n- It\'s impossible to say\n- No')
    assert ed.closed_book_prompt(claim) == ("Is it true that Aerosvit Airlines was founded in Kyiv?"
                                            "\n\nOPTIONS:\n- yes\n- no")
    ans = ed.answer([claim])[0]
    assert (ans.step1_output, ans.output, ans.step) == ("It's impossible to say.", "yes", 2)
    assert tokens == [10, 10]  # EREN: 10 new tokens when options are listed
    one = _editor("one_step", "nli", k=1)
    assert one.step1_prompt(claim, ["N"]).endswith("OPTIONS:\n- Yes\n- No")
    assert one.answer([claim])[0].output == "No"


def test_batched_equals_unbatched_with_stub():
    qs = ["Who developed the Toyota Cresta?", "What is the capital of Peru?",
          "What is Danielle Darrieux's mother tongue?", "Who developed the Toyota Cresta?", "Where is Lima?"]
    ed = _editor()
    batched = [a.to_dict() for a in ed.answer(qs)]
    single = [ed.answer([q])[0].to_dict() for q in qs]
    assert batched == single
    assert batched[2]["output"] == "English" and batched[4]["step"] == 2


def test_bad_configuration_is_refused():
    with pytest.raises(ConfigError, match="task"):
        ErenEditor(StubReader({}), None, "summarise", "unedited")
    with pytest.raises(ConfigError, match="method"):
        ErenEditor(StubReader({}), None, "qa", "rag")
    with pytest.raises(ConfigError, match="notebook"):
        ErenEditor(StubReader({}), None, "qa", "eren")
    with pytest.raises(KeyError, match="no answer"):
        StubReader({}).generate(["?"])


def test_chat_reader_batched_equals_unbatched_and_leaves_tokenizer_alone(tiny_llama_model, llama_tok):
    # The tiny random model echoes its last input token, so outputs differ per prompt and a wrongly
    # padded batch (pads after the prompt) would continue from a pad token instead.
    prompts = ["Who wrote Hamlet?", "A much longer prompt about the capital city of a small country in Europe",
               "Hi", "Read this and answer the question.\n\nParis is in Italy.\n\nWhere is Paris"]
    batched = ChatReader(tiny_llama_model, llama_tok, batch_size=4, use_chat_template=False)
    single = ChatReader(tiny_llama_model, llama_tok, batch_size=1, use_chat_template=False)
    out_b = batched.generate(prompts, max_new_tokens=6)
    out_s = single.generate(prompts, max_new_tokens=6)
    assert out_b == out_s
    assert len(set(out_b)) == 4 and all(out_b)
    assert llama_tok.padding_side == "right"  # the caller's tokenizer is not modified
    chat = ChatReader(tiny_llama_model, llama_tok)
    assert chat.use_chat_template  # SmolLM2's tokenizer has one
    assert chat.format("Hi").endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    one_by_one = [chat.generate([p], max_new_tokens=3)[0] for p in prompts[:2]]
    assert chat.generate(prompts[:2], max_new_tokens=3) == one_by_one
    with pytest.raises(ConfigError):
        ChatReader(tiny_llama_model, llama_tok, batch_size=0)
