"""Device discipline without a GPU: every library entry point, run on a simulated CUDA device
(tests/simdevice.py), keeps its tensors on that device, never mixes CPU and CUDA tensors in one op,
and returns exactly the numbers of a plain CPU run.

Each library test runs the same calls twice: plainly on the CPU, then inside `simulated_cuda()` with
the models moved to "cuda" and inputs as the stage scripts have them (torch.load'ed edits, second
moments and adaptor states are CPU tensors).
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from conftest import tiny_llama, tiny_model_cfg
from robustedit.edits import RankOneEdit
from robustedit.eren.editor import ErenEditor
from robustedit.eren.encoder import EncoderSpec, TransformerEncoder
from robustedit.eren.notebook import Notebook
from robustedit.eren.reader import ChatReader
from robustedit.eren.robustness import edit_statement, evaluate_robustness
from robustedit.evaluate import evaluate_cases
from robustedit.evaluate.generation import GenerationSpec
from robustedit.evaluate.leakage import leak_guard
from robustedit.models.arch import Architecture
from robustedit.models.load import resolve_device
from robustedit.rep import (AdaptorConfig, RepEditBatch, RepTrainConfig, TrainingKeys, fit_rep_adaptor, init_params,
                            train_on_keys)
from robustedit.rome import (MomentSolver, ROMEHyperParams, compute_second_moment, execute_rome_detailed,
                             generate_context_templates)
from robustedit.seeding import torch_generator
from simdevice import CUDA, DeviceMixError, SimGenerator, simulated_cuda
from test_evaluate import make_case

LAYER = 1
ARCH = Architecture.from_config(tiny_model_cfg("llama"))
TEMPLATES = ["{}", "The man said. {}", "Because it rained all day. {}", "I think. {}", "You. {}", "Therefore. {}"]
REQUESTS = [
    {"case_id": 11, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "target_new": "English"},
    {"case_id": 12, "prompt": "Toko Yasuda, the", "subject": "Toko Yasuda", "target_new": "guitar player"},
]
# 3 v* steps on 2 cases in one batch: every code path of compute_v (prefix cache, lower-layer reuse,
# Adam, clamp) runs; 6 templates as TEMPLATES
HP = ROMEHyperParams(v_num_grad_steps=3, v_lr=0.05, v_weight_decay=1e-6, clamp_norm_factor=1000.0,
                     early_stop_loss=None, context_template_length_params=((5, 5),), batch_cases=2)
CASES = [make_case(0), make_case(1, "Toko Yasuda", "{}, a native speaker of", "Russian", "Japanese", n_held=1),
         make_case(2, "Apple A5", "{} was created by", "Google", "Apple")]


@pytest.fixture(scope="module")
def model(llama_tok):
    """A tiny model of this module's own: the tests move it between (simulated) devices."""
    return tiny_llama(len(llama_tok), seed=5)


def spd(dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, 3 * dim, generator=g, dtype=torch.float64)
    return a @ a.T / (3 * dim)


def cpu_edits(model, n: int, seed: int = 0) -> list[RankOneEdit]:
    """Rank-one edits as eval_rome.py loads them: CPU tensors, large enough to move the argmax."""
    g = torch.Generator().manual_seed(seed)
    lin = ARCH.module(model, "down_proj", LAYER)
    return [RankOneEdit(LAYER, torch.randn(lin.in_features, generator=g) / lin.in_features ** 0.5,
                        20 * torch.randn(lin.out_features, generator=g)) for _ in range(n)]


def assert_same(a, b, where: str = "result") -> None:
    """Bit-for-bit equality of nested results (tensors, arrays, dicts, lists, dataclasses, numbers)."""
    if dataclasses.is_dataclass(a):
        a, b = dataclasses.asdict(a), dataclasses.asdict(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ---------------------------------------------------------------- the checker itself
def test_checker_flags_device_mixes_and_allows_pytorch_exemptions():
    with simulated_cuda() as sim:
        x = torch.arange(4.0, device="cuda")
        assert x.device == CUDA and x.is_cuda and x.get_device() == 0
        assert torch.ones(2, device=x.device).device == CUDA  # devices read from tensors propagate
        with pytest.raises(DeviceMixError, match="add"):
            x + torch.ones(4)  # a CPU tensor next to a CUDA one: what a GPU rejects
        with pytest.raises(DeviceMixError, match="dot"):
            torch.dot(torch.ones(4), x)
        with pytest.raises(DeviceMixError):
            torch.ones(4) * torch.tensor(2.0, device="cuda")  # a CUDA scalar is no CPU scalar
        assert (x * torch.tensor(2.0)).device == CUDA  # a 0-dim CPU tensor may meet CUDA tensors
        assert x[torch.tensor([0, 2])].device == CUDA  # CPU indices may index a CUDA tensor ...
        with pytest.raises(DeviceMixError, match="indices"):
            torch.ones(4)[torch.tensor([0], device="cuda")]  # ... not the reverse
        x[torch.tensor([0])] = torch.tensor(5.0)
        x[1:3] = torch.ones(2)  # basic indexing copies the value over (copy_)
        with pytest.raises(DeviceMixError, match="setitem"):
            x[torch.tensor([0, 1])] = torch.ones(2)  # advanced indexing needs the value on x's device
        assert x.device == CUDA and x.tolist() == [5.0, 1.0, 1.0, 3.0]
        with pytest.raises(DeviceMixError, match="numpy"):
            x.numpy()
        y = x.cpu()
        assert y.device.type == "cpu" and x.device == CUDA and y is not x
        y.copy_(x)  # copy_ crosses devices
        with pytest.raises(DeviceMixError, match="add_"):
            y.add_(x)
        with pytest.raises(DeviceMixError, match="writes a cuda:0 result"):
            torch.tensor(1.0).add_(torch.tensor(2.0, device="cuda"))  # in place into a CPU scalar
        gen = torch.Generator(device="cuda")
        assert isinstance(gen, SimGenerator) and gen.device.type == "cuda" and torch.cuda.is_available()
        with pytest.raises(DeviceMixError, match="generator"):
            torch.randperm(4, generator=gen)  # a CPU op drawing from a CUDA generator
        assert torch.randn(3, generator=gen, device="cuda").device == CUDA
        assert sim.device_of(y) == torch.device("cpu")
    assert not isinstance(torch.Generator(), SimGenerator)  # torch is restored on exit


def test_checker_moves_modules_parameters_and_gradients_without_changing_values():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    x = torch.randn(5, 4)
    plain = net(x).sum()
    plain.backward()
    want = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with simulated_cuda():
        net.to("cuda")
        assert all(t.device == CUDA for t in list(net.parameters()) + list(net.buffers()))
        assert torch.nn.Parameter(torch.zeros(2, device="cuda")).device == CUDA
        with pytest.raises(DeviceMixError, match="linear"):
            net(x)  # the input was not moved
        out = net(x.to("cuda")).sum()
        out.backward()
        assert all(p.grad.device == CUDA for p in net.parameters())
        torch.optim.Adam(net.parameters()).step()  # optimiser state follows the parameters
        net.cpu()
        assert all(t.device.type == "cpu" for t in net.parameters())
    assert torch.equal(out, plain)
    assert_same([p.grad for p in net.parameters()], want, "gradients")


class CpuFactorSolver(MomentSolver):
    """The MomentSolver before the fix: solves on the factor's device and returns there."""

    def solve(self, k: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(k.to(self.factor.device, torch.float64).T, self.factor).T


def test_checker_catches_the_cpu_moment_solver_bug(llama_tok, model, tmp_path):
    """scripts/rome.py loaded mom2.pt on the CPU; u came back on the CPU, k* was on CUDA."""
    torch.save({"moment": spd(ARCH.key_dim(model, LAYER))}, tmp_path / "mom2.pt")
    with simulated_cuda():
        model.to("cuda")
        C = torch.load(tmp_path / "mom2.pt", weights_only=True)["moment"]
        with pytest.raises(DeviceMixError, match="dot"):
            execute_rome_detailed(model, llama_tok, ARCH, REQUESTS, CpuFactorSolver(C), TEMPLATES, HP,
                                  resolve_device("cuda"), LAYER)


# ---------------------------------------------------------------- ROME
def rome(model, tok, solver, device):
    return execute_rome_detailed(model, tok, ARCH, REQUESTS, solver, TEMPLATES, HP, device, LAYER)


@pytest.mark.parametrize("factor_on", ["run device", "cpu"])
def test_rome_on_cuda_with_a_cpu_loaded_second_moment(llama_tok, model, tmp_path, factor_on):
    """As scripts/rome.py: C from torch.load (CPU), the solver on the run's device (or left on
    the CPU, as older callers do); u, v*, k* come back on CUDA with the CPU run's exact values."""
    torch.save({"moment": spd(ARCH.key_dim(model, LAYER))}, tmp_path / "mom2.pt")
    C = torch.load(tmp_path / "mom2.pt", weights_only=True)["moment"]
    want = rome(model, llama_tok, MomentSolver(C), "cpu")
    with simulated_cuda():
        device = resolve_device("cuda")
        model.to(device)
        C = torch.load(tmp_path / "mom2.pt", weights_only=True)["moment"]
        assert C.device.type == "cpu"
        solver = MomentSolver(C, device=device if factor_on == "run device" else None)
        got = rome(model, llama_tok, solver, device)
        for edit, res in got:
            assert {edit.u.device, edit.v.device, res.k_star.device, res.delta.device} == {CUDA}
    assert_same(got, want, "ROME edits")


def test_templates_and_second_moment_on_cuda(llama_tok, model):
    texts = ["Paris is the capital of France.", "The cat sat on the mat and looked around.", "Hello"]

    def run(device):
        templates = generate_context_templates(model, llama_tok, torch_generator(0, "templates"),
                                               length_params=((5, 5),), device=device)
        states = []  # a checkpoint after each document, then a resumed run from the first one
        full = compute_second_moment(model, llama_tok, ARCH, LAYER, texts, device=device, checkpoint_every=1,
                                     on_checkpoint=states.append)
        resumed = compute_second_moment(model, llama_tok, ARCH, LAYER, texts, device=device, checkpoint_every=1,
                                        state=states[0])
        return templates, full.moment, resumed.moment, states[0]["sum"]

    want = run("cpu")
    with simulated_cuda():
        model.to("cuda")
        got = run(resolve_device("cuda"))
        assert got[1].device == got[2].device == CUDA and got[3].device.type == "cpu"  # checkpoints on CPU
    assert_same(got, want, "templates and moments")


# ---------------------------------------------------------------- REP and evaluation
def rep_and_evaluation(model, tok, device) -> dict:
    """REP fit (dropout, gate loss, negative subsampling), then the suite on ROME and ROME+REP edits,
    batched and sequential, packed and not (the unedited "pre" scores are computed once), and with the
    generation protocol."""
    u = torch.randn(ARCH.key_dim(model, LAYER), generator=torch.Generator().manual_seed(1))
    tcfg = RepTrainConfig(steps=3, gate_loss_weight=0.5, gate_max_negatives=5)
    down = ARCH.module(model, "down_proj", LAYER)
    fit = fit_rep_adaptor(model, tok, down, CASES[0], TEMPLATES, u / u.norm(), leaks=leak_guard(tok, CASES[0]),
                          tcfg=tcfg, seed=0, device=device, negative_texts=["An unrelated line of text ."])
    edits = cpu_edits(model, len(CASES))
    rep = RepEditBatch(model, ARCH, LAYER, edits, [fit.state, None, fit.state], device)

    def suite(edit_batch, mode, **kw):
        return evaluate_cases(model, tok, ARCH, CASES, edit_batch, 8, device, mode, long_id_passages=1, **kw)

    out = {"fit": (fit.state, fit.log), "rome_batched": suite(edits, "batched")}
    pre = {"pre_from": out["rome_batched"]}
    out["rome_sequential"] = suite(edits, "sequential", pack=False, alternatives=False, **pre)
    out["rep_batched"] = suite(rep, "batched", **pre)
    out["rep_sequential"] = suite(rep, "sequential", **pre)
    # both protocols: continuations decoded from the teacher-forced cache, per-row edits at every new token
    spec = GenerationSpec(margin=2)
    out["rome_generation"] = suite(edits, "batched", generation=spec)
    out["rep_generation"] = suite(rep, "batched", generation=spec, pre_from=out["rome_generation"])
    return out


def test_rep_fit_and_evaluation_on_cuda(llama_tok, model):
    want = rep_and_evaluation(model, llama_tok, "cpu")
    with simulated_cuda():
        model.to("cuda")
        got = rep_and_evaluation(model, llama_tok, resolve_device("cuda"))
        assert all(t.device.type == "cpu" for t in got["fit"][0]["params"].values())  # states are saved from CPU
    assert_same(got, want, "REP and evaluation")


def test_rep_draws_follow_the_generators_device():
    """A CUDA generator draws on CUDA (a CPU op cannot use it); fit.py's CPU generators draw on the CPU."""
    cfg = AdaptorConfig(rank=4, gate_inner_ratio=0.5)
    tcfg = RepTrainConfig(steps=2, batch_size=3, gate_loss_weight=1.0, gate_max_negatives=3)
    with simulated_cuda():
        keys = TrainingKeys(pool=torch.randn(5, 16, device="cuda"), original=torch.randn(16, device="cuda"),
                            gate_pos=torch.randn(6, 16, device="cuda"), gate_neg=torch.randn(9, 16, device="cuda"))
        params = init_params(16, cfg, torch_generator(0, "init", device="cuda"), "cuda")
        assert all(p.device == CUDA for p in params.values())
        trained, _ = train_on_keys(params, cfg, keys, torch.randn(16, device="cuda"), tcfg,
                                   batch_rng=random.Random(0), dropout_generator=torch_generator(0, "d", device="cuda"),
                                   negative_generator=torch_generator(0, "n", device="cuda"))
        assert all(p.device == CUDA for p in trained.values())


# ---------------------------------------------------------------- EREN
def eren(model, encoder_model, tok, device) -> dict:
    spec = EncoderSpec("tiny", "", True, 64, True)  # normalised mean pooling, as the MiniLM preset
    encoder = TransformerEncoder(encoder_model, tok, spec, device=device, batch_size=2)
    notebook = Notebook(encoder)
    notebook.add([edit_statement(c) for c in CASES])
    hits = notebook.search(["The mother tongue of Danielle", "Apple A5 was made by"], k=2)
    # no chat template: the tiny random model then answers differently per prompt (tests/test_eren_editor.py)
    reader = ChatReader(model, tok, device=device, batch_size=4, use_chat_template=False)
    answers = reader.generate(["Who wrote Hamlet?", "Paris is in Italy. Where is Paris"], max_new_tokens=4)
    editor = ErenEditor(reader, notebook, "qa", "eren")
    suite = evaluate_robustness(CASES[:1], editor, groups=("success", "locality"))
    return {"embeddings": notebook.index.reconstruct_n(0, len(notebook)), "hits": hits, "answers": answers,
            "suite": suite.items}


def test_eren_encoder_notebook_and_reader_on_cuda(llama_tok, model):
    encoder_model = tiny_llama(len(llama_tok), seed=6, n_layers=2).model  # a LlamaModel: last_hidden_state
    want = eren(model, encoder_model, llama_tok, "cpu")
    with simulated_cuda():
        got = eren(model, encoder_model, llama_tok, resolve_device("cuda"))
        assert next(model.parameters()).device == next(encoder_model.parameters()).device == CUDA
    assert all(want["answers"])  # non-empty answers: the comparison below sees real generations
    assert_same(got, want, "EREN")
