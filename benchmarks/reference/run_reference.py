#!/usr/bin/env python
"""Time the REP authors' released single-edit flow (ElliottYan/RobustKeyEdit @ 5c54348,
EasyEditOurs/edit_single.py) with ROME on SmolLM2-135M, offline, on CPU.

It runs the authors' own `edit_single.main()` exactly as scripts/edit_llama.sh
calls it (--editing_method=ROME, --update_hparams '{"mom2_adjustment": "True",
"mom2_dataset": "wikitext", "use_our_aggregator": ""}', --collect
'original_shuffle_long_rephrase', --seed 0), on N records of the REP CounterFact
test file, and only wraps some of their functions with timers:

  per case i:  pre-eval  = i-th compute_bias_edit_quality(post=False) (their first loop)
               iteration = from the i-th apply_rome_to_model call to the next one
                           (edit + post-eval + weight restore + bookkeeping)
               total     = pre-eval + iteration
               rome      = execute_rome (compute_u + compute_v; the weight write-in
                           in apply_rome_to_model is counted as evaluation/other)
               eval      = total - rome

ROME's second moment is excluded: it is placed as their layer_stats cache file
and its inverse is computed (by their get_inv_cov, which caches it) before the
timed flow starts. The one-time generation of ROME's context templates happens
inside the first case's execute_rome, as in their flow; it is shown separately
("tmpl") and the means are also given without it. rome = u + v + tmpl (+ negligible).

Set up first with setup.sh (same REFBENCH_DIR), then, from the repo root:
  $REFBENCH_DIR/.venv/bin/python benchmarks/reference/run_reference.py --n-cases 8 --threads 2 \\
      --case-ids-from results/smollm2-135m/cases/<hash>/test.jsonl
"""
import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from pathlib import Path

import prepare_data as prep
import stubs

DATA = prep.REPO / "resources/data/rep/test.counterfact_para_prompt_para_subject_llama2-7b.json"
UPDATE_HPARAMS = '{"mom2_adjustment": "True", "mom2_dataset": "wikitext", "use_our_aggregator": ""}'
COLLECT = "original_shuffle_long_rephrase"


class DryRun(Exception):
    pass


class Tee(io.TextIOBase):
    """Pass writes through to the real stdout and keep a copy."""

    def __init__(self, real):
        self.real, self.buf = real, io.StringIO()

    def write(self, s):
        self.buf.write(s)
        return self.real.write(s)

    def flush(self):
        self.real.flush()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-cases", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help="REP-format cases (json list)")
    ap.add_argument("--case-ids-from", type=Path,
                    help="robustedit cases jsonl: time the REP records of its first N case_ids")
    ap.add_argument("--moment", type=Path,
                    help="mom2.pt (default: the single results/smollm2-135m/stats/*/mom2.pt)")
    ap.add_argument("--out-dir", type=Path, default=prep.WORK / "out")
    ap.add_argument("--dry-run", action="store_true",
                    help="import the reference, load the model and the second moment, then exit")
    args = ap.parse_args()
    for k in ("data", "case_ids_from", "moment", "out_dir"):  # before the chdir below
        if getattr(args, k) is not None:
            setattr(args, k, getattr(args, k).resolve())
    args.moment = args.moment or prep.find_moment()
    return args


def main():
    args = parse_args()
    if not (prep.EE / "edit_single.py").exists() or not prep.HPARAMS.exists():
        sys.exit(f"{prep.EE} or {prep.HPARAMS} missing: run benchmarks/reference/setup.sh "
                 f"with REFBENCH_DIR={prep.WORK} first")
    # threads: before torch is imported (OpenMP pool), and torch.set_num_threads below
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[k] = str(args.threads)
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[k] = "1"
    ee = str(prep.EE)
    stubs.install(ee)
    import torch
    torch.set_num_threads(args.threads)

    # offline stand-ins for the reference's external data (made by setup.sh; no-op if present)
    _, _, stats_file = prep.prepare_all(args.moment)

    # edit_single's read_data then random.sample()s all N records, i.e. only permutes them
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cases = prep.select_cases(args.data, args.n_cases, args.case_ids_from)
    cases_file = args.out_dir / f"cases_first{args.n_cases}.json"
    with open(cases_file, "w") as f:
        json.dump(cases, f)
    print(f"[refbench] case_ids {[c['case_id'] for c in cases]} -> {cases_file}")

    # the authors' script runs from EasyEditOurs/ (cd $ROOT); evaluate.py loads
    # ../data_construction/wikitext-103-raw-v1 relative to it at import time
    os.chdir(ee)
    sys.path.insert(0, ee)
    import edit_single
    stubs.hide()
    called_at_import = set(stubs.CALLED)
    from easyeditor.editors import erasor
    from easyeditor.evaluate import evaluate as ev
    from easyeditor.models import agg_utils
    from easyeditor.models.rome import rome_main, compute_u as cu_mod

    T = dict(pre=[], post=[], apply_start=[], rome=[], u=[], v=[], tmpl=[],
             fluency=[], edit_end=None, edit_start=None, stats=None, vlog=[])
    now = time.perf_counter

    def timed(store, fn):
        def w(*a, **k):
            t0 = now()
            try:
                return fn(*a, **k)
            finally:
                T[store].append(now() - t0)
        return w

    # evaluation: compute_bias_edit_quality as erasor.py imported it
    orig_cbeq = erasor.compute_bias_edit_quality

    def cbeq(*a, **k):
        t0 = now()
        try:
            return orig_cbeq(*a, **k)
        finally:
            T["post" if k.get("post", True) else "pre"].append(now() - t0)
    erasor.compute_bias_edit_quality = cbeq
    ev.test_generation_quality = timed("fluency", ev.test_generation_quality)

    # ROME: apply_rome_to_model (ALG_DICT entry read by BaseErasor.__init__),
    # execute_rome / compute_u / compute_v as looked up in rome_main
    orig_apply = erasor.ALG_DICT["ROME"]

    def apply(*a, **k):
        T["apply_start"].append(now())
        return orig_apply(*a, **k)
    erasor.ALG_DICT["ROME"] = apply
    rome_main.execute_rome = timed("rome", rome_main.execute_rome)
    rome_main.compute_u = timed("u", rome_main.compute_u)
    orig_cv = rome_main.compute_v

    def cv(*a, **k):
        tee = Tee(sys.stdout)
        t0 = now()
        try:
            with contextlib.redirect_stdout(tee):
                return orig_cv(*a, **k)
        finally:
            T["v"].append(now() - t0)
            T["vlog"].append(tee.buf.getvalue())
    rome_main.compute_v = cv

    orig_tmpl = agg_utils.get_context_templates_rome

    def tmpl(*a, **k):  # only the one-time generation (case 0) is timed; later calls hit their cache
        if agg_utils.CONTEXT_TEMPLATES_CACHE is None:
            return timed("tmpl", orig_tmpl)(*a, **k)
        return orig_tmpl(*a, **k)
    agg_utils.get_context_templates_rome = tmpl

    # BaseErasor.edit: load + invert the second moment first (their get_inv_cov,
    # cached in compute_u.inv_mom2_cache), outside the timed region
    orig_edit = erasor.BaseErasor.edit

    def edit(self, *a, **k):
        hp = self.hparams
        t0 = now()
        name = self.model.config._name_or_path.replace("/", "_")
        assert name in str(stats_file), (name, stats_file)
        inv = cu_mod.get_inv_cov(self.model, self.tok, hp.rewrite_module_tmp.format(hp.layers[0]),
                                 hp.mom2_dataset, hp.mom2_n_samples, hp.mom2_dtype, hparams=hp)
        T["stats"] = now() - t0
        src = torch.load(args.moment, weights_only=True)["moment"]
        err = (inv.double() @ src - torch.eye(src.shape[0], dtype=torch.float64)).abs().max().item()
        print(f"[refbench] inverse second moment from {stats_file}: max|C^-1 C - I| = {err:.2e}; "
              f"threads={torch.get_num_threads()}")
        if args.dry_run:
            raise DryRun
        T["edit_start"] = now()
        try:
            return orig_edit(self, *a, **k)
        finally:
            T["edit_end"] = now()
    erasor.BaseErasor.edit = edit

    sys.argv = [
        "edit_single.py",
        "--editing_method=ROME",
        f"--hparams_dir={prep.HPARAMS}",
        "--data_dir", str(cases_file),
        "--data_points", str(args.n_cases),
        "--metrics_save_dir", str(args.out_dir / "metrics"),
        "--model_save_dir", str(args.out_dir / "models" / "ROME"),
        "--update_hparams", UPDATE_HPARAMS,
        "--collect", COLLECT,
        "--seed", str(args.seed),
    ]
    try:
        edit_single.main()
    except DryRun:
        print(f"[refbench] dry run OK: reference imported, model loaded, second moment checked; "
              f"stubbed objects called: {sorted(stubs.CALLED - called_at_import) or 'none'}")
        return
    report(args, T, stubs.CALLED - called_at_import)


def flat(x):
    return [y for v in x for y in flat(v)] if isinstance(x, (list, tuple)) else [float(x)]


def mean(x):
    x = [v for v in x if v == v]
    return sum(x) / len(x) if x else float("nan")


def report(args, T, called):
    """Per-case table, means, the reference's own edit metrics; writes timings_n*_t*.json."""
    n = args.n_cases
    assert len(T["pre"]) == n and len(T["post"]) == n and len(T["apply_start"]) == n, T
    bounds = T["apply_start"] + [T["edit_end"]]
    two_fluency = len(T["fluency"]) == 2 * n  # all pre-evals run first, then edit+post per case
    rows = []
    for i in range(n):
        total = T["pre"][i] + bounds[i + 1] - bounds[i]
        rows.append(dict(case=i, total=total, rome=T["rome"][i], eval=total - T["rome"][i],
                         u=T["u"][i], v=T["v"][i], pre=T["pre"][i], post=T["post"][i],
                         fluency=T["fluency"][i] + T["fluency"][n + i] if two_fluency else float("nan"),
                         tmpl=(T["tmpl"][0] if (i == 0 and T["tmpl"]) else 0.0)))
    with open(args.out_dir / "metrics" / f"ROME_results_seed{args.seed}.json") as f:
        res = [r for r in json.load(f) if "post" in r]

    print(f"\n[refbench] per-case wall seconds (threads={args.threads})")
    print(f"{'case':>4} {'subject':<28} {'total':>8} {'rome':>8} {'eval':>8} | {'u':>7} {'v':>7} "
          f"{'tmpl':>7} {'pre':>7} {'post':>7} {'fluency':>7}")
    for r, m in zip(rows, res):
        print(f"{r['case']:>4} {m['requested_rewrite']['subject'][:28]:<28} {r['total']:8.2f} "
              f"{r['rome']:8.2f} {r['eval']:8.2f} | {r['u']:7.2f} {r['v']:7.2f} {r['tmpl']:7.2f} "
              f"{r['pre']:7.2f} {r['post']:7.2f} {r['fluency']:7.2f}")
    tm = T["tmpl"][0] if T["tmpl"] else 0.0
    col = {k: mean([r[k] for r in rows]) for k in ("total", "rome", "eval")}
    print(f"mean {'':<28} {col['total']:8.2f} {col['rome']:8.2f} {col['eval']:8.2f}")
    print(f"mean without the one-time context-template generation ({tm:.2f}s, inside case 0's "
          f"compute_u): total {col['total'] - tm / n:.2f}  rome {col['rome'] - tm / n:.2f}  "
          f"eval {col['eval']:.2f}")
    print(f"editor.edit() wall {T['edit_end'] - T['edit_start']:.2f}s vs sum of per-case totals "
          f"{sum(r['total'] for r in rows):.2f}s; excluded: second-moment load+inverse {T['stats']:.2f}s")

    print("\n[refbench] edit check (the reference's own metrics, post-edit):")
    for i, m in enumerate(res):
        rr, post, pre = m["requested_rewrite"], m["post"], m["pre"]
        losses = re.findall(r"^loss ([-\d.e]+) = .*avg prob of \[.*?\] ([-\d.e]+)", T["vlog"][i], re.M)
        traj = [float(loss) for loss, _ in losses]
        print(f"case {i}: [{rr['prompt']}] -> {rr['target_new']!r} (was {rr['target_true']!r})")
        if losses:
            print(f"  v* steps printed: {len(losses)}; loss {traj[0]} -> {traj[-1]}; "
                  f"avg prob of target {float(losses[0][1])} -> {float(losses[-1][1])}")
        print(f"  loss trajectory: {traj}")

        def acc(key, d=post):
            v = d.get(key)
            return "n/a" if v is None else f"{mean(flat(v)):.3f}"
        print(f"  rewrite acc pre {acc('acc', pre)} -> post {acc('acc')}; target_true acc pre "
              f"{acc('rev', pre)} -> post {acc('rev')}; rephrase-prompt acc {acc('generalization')}; "
              f"locality {acc('zsre_acc', post.get('locality', {}))}")
        print(f"  subject-rephrase acc {acc('edited_rephrase_sub_target_new_acc')}; "
              f"shuffled-subject acc {acc('edited_shuffled_sub_target_new_acc')}; "
              f"long-context acc {acc('edited_long_context_target_new_acc')}; "
              f"held long-context acc {acc('edited_long_context_held_target_new_acc')}; "
              f"fluency (ngram entropy) pre {pre.get('fluency', {}).get('ngram_entropy')} "
              f"post {post.get('fluency', {}).get('ngram_entropy')}")
    with open(args.out_dir / f"timings_n{n}_t{args.threads}.json", "w") as f:
        json.dump(dict(rows=rows, tmpl=tm, stats_excluded=T["stats"],
                       edit_wall=T["edit_end"] - T["edit_start"], threads=args.threads), f, indent=1)
    print(f"[refbench] stubbed objects called/instantiated after import: {sorted(called) or 'none'}")


if __name__ == "__main__":
    main()
