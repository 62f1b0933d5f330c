"""Golden regression: ROME on three real SmolLM2-135M cases (layer 4), against numbers stored in
tests/golden/rome_smollm2.json.

u = k̄/‖k̄‖ (no second moment, so the test needs no statistics stage) and six fixed context templates
keep it fast; everything else is the default ROME. Tolerances: the v* optimisation is a chain of 24
float32 Adam steps, so norms and losses are compared to 1e-3 relative (BLAS differences between
machines move them by ~1e-5); update counts, early stops and the edited model's greedy target tokens
must match exactly. Regenerate after an intended change with
    ROBUSTEDIT_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_rome_golden.py
and say why in the commit.
"""
import json
import os

import pytest
import torch

from conftest import REPO, model_dir
from robustedit.edits import applied
from robustedit.evaluate.scoring import encode_item, score_items
from robustedit.models.load import load_model
from robustedit.rome.execute import execute_rome_detailed
from robustedit.rome.hparams import ROMEHyperParams

from robustedit.pipeline.config import compose  # noqa: E402

pytestmark = pytest.mark.integration
GOLDEN = REPO / "tests" / "golden" / "rome_smollm2.json"
TEMPLATES = ["{}", "The following is true. {}", "Therefore, {}", "Because of this, {}", "I read that {}",
             "You may know that {}"]  # fixed stand-ins for the sampled ones (one per prefix)
REQUESTS = [  # REP valid records that SmolLM2 knows (kept by the cases stage's filter)
    {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "target_new": "English", "target_true": "French"},
    {"case_id": 3, "prompt": "Apple A5 was created by", "subject": "Apple A5", "target_new": "Google",
     "target_true": "Apple"},
    {"case_id": 13, "prompt": "The mother tongue of Jean Galland is", "subject": "Jean Galland",
     "target_new": "Russian", "target_true": "French"},
]
RTOL = 1e-3


def run_golden() -> list[dict]:
    lm = load_model(model_dir("smollm2-135m"), compose([])["model"], "cpu", "float32")
    hp = ROMEHyperParams(mom2_adjustment=False, context_template_length_params=((5, 5),), batch_cases=2)
    results = execute_rome_detailed(lm.model, lm.tokenizer, lm.arch, REQUESTS, None, TEMPLATES, hp, "cpu", 4)
    out = []
    for req, (edit, res) in zip(REQUESTS, results):
        items = [encode_item(lm.tokenizer, req["prompt"], t) for t in (req["target_new"], req["target_true"])]
        with applied(lm.arch.module(lm.model, "down_proj", 4), edit):
            new, true = score_items(lm.model, lm.arch, items, 2, "cpu")
        out.append({"case_id": req["case_id"], "n_updates": res.n_updates, "stopped_early": res.stopped_early,
                    "first_loss": res.losses[0], "final_loss": res.losses[-1],
                    "delta_norm": float(res.delta.norm()), "v_init_norm": float(res.v_init.norm()),
                    "u_dot_k_star": float(edit.u @ res.k_star),
                    "post_argmax_new": new.argmax_ids, "post_logprob_new": sum(new.logprobs),
                    "post_logprob_true": sum(true.logprobs)})
    return out


def test_rome_matches_the_golden_numbers():
    got = run_golden()
    if os.environ.get("ROBUSTEDIT_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
        pytest.skip("golden numbers regenerated")
    want = json.loads(GOLDEN.read_text())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        cid = w["case_id"]
        for key in ("case_id", "n_updates", "stopped_early", "post_argmax_new"):
            assert g[key] == w[key], (cid, key, g[key], w[key])
        for key in ("first_loss", "final_loss", "delta_norm", "v_init_norm", "u_dot_k_star",
                    "post_logprob_new", "post_logprob_true"):
            assert g[key] == pytest.approx(w[key], rel=RTOL, abs=1e-4), (cid, key)
    # the edit did its job on these cases: the new target is now the greedy continuation
    assert all(g["post_logprob_new"] > g["post_logprob_true"] for g in got)
    assert torch.isfinite(torch.tensor([g["delta_norm"] for g in got])).all()
