"""Paths of the reference benchmark, and the offline stand-ins for the reference's
external data, put where its code looks (relative to the work dir $REFBENCH_DIR):

1. InfoDeletionAttacks/third_party/data/parap_all_new.pkl (../../../ of
   EasyEditOurs/easyeditor/evaluate/evaluate.py), unpickled when that module is
   imported. Rebuilt from the repo's JSON copy of that exact pickle (dict: str -> list[str]).
2. data_construction/wikitext-103-raw-v1 (../ of the working dir, which is
   EasyEditOurs/ as in the authors' script): a datasets.DatasetDict saved with
   save_to_disk, which evaluate.py loads with load_from_disk and samples long
   contexts from wiki_data["train"]. The hub's WikiText-103 train split is not
   available offline; "train" here holds the WikiText-103 valid+test raw lines,
   one row per line exactly as the HF wikitext builder yields them.
3. The ROME layer second moment, converted from this repo's stats stage output
   (results/<model>/stats/<hash>/mom2.pt) to the reference's layer_stats cache file.

Also: the work-dir paths shared with run_reference.py, and select_cases() (which REP
records run_reference.py times).

Run by setup.sh:  $REFBENCH_DIR/.venv/bin/python prepare_data.py [--moment PATH] [--hparams PATH]
"""
import argparse
import json
import os
import pickle
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("REFBENCH_DIR", REPO.parent / "refbench")).resolve()
EE = WORK / "EasyEditOurs"
HPARAMS = WORK / "hparams" / "ROME" / "smollm2-135m.yaml"
MODEL = "smollm2-135m"


def find_moment(model=MODEL):
    """The single results/<model>/stats/*/mom2.pt of this repo (the stats stage output)."""
    found = sorted((REPO / "results" / model / "stats").glob("*/mom2.pt"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(str(p) for p in found)})"
        sys.exit(f"found {what} results/{model}/stats/*/mom2.pt under {REPO}; run the repo's "
                 f"stats stage first, or pass --moment PATH")
    return found[0]


def prep_pickle():
    out = WORK / "InfoDeletionAttacks" / "third_party" / "data" / "parap_all_new.pkl"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(REPO / "resources" / "data" / "counterfact" / "patil_paraphrases.json") as f:
        d = json.load(f)
    with open(out, "wb") as f:
        pickle.dump(d, f)
    return out


def wikitext_rows(path):
    # as the HF `wikitext` builder: each line is a row, blank lines become ""
    with open(path, encoding="utf-8") as f:
        return [row if row.strip() else "" for row in f]


def prep_wikitext():
    out = WORK / "data_construction" / "wikitext-103-raw-v1"
    if out.exists():
        return out
    import datasets
    w = REPO / "resources" / "data" / "wikitext"
    valid, test = wikitext_rows(w / "wiki.valid.raw"), wikitext_rows(w / "wiki.test.raw")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": valid + test}),
        "validation": datasets.Dataset.from_dict({"text": valid}),
        "test": datasets.Dataset.from_dict({"text": test}),
    })
    dd.save_to_disk(str(out))
    return out


def stats_file(hp, ds_name="wikitext"):
    """The cache path layer_stats() looks for:
    {stats_dir}/{model_name}/{ds}_stats/{layer_name}_{precision}_mom2_{sample_size}.npz
    with model_name = model.config._name_or_path.replace('/', '_')."""
    model_name = hp["model_name"].replace("/", "_")
    layer_name = hp["rewrite_module_tmp"].format(hp["layers"][0])
    return (Path(hp["stats_dir"]) / model_name / f"{ds_name}_stats" /
            f"{layer_name}_{hp['mom2_dtype']}_mom2_{hp['mom2_n_samples']}.npz")


def prep_stats(hp, moment, ds_name="wikitext"):
    """Keys as tally()/CombinedStat/SecondMoment.state_dict() write them:
    'mom2.constructor', 'mom2.count', 'mom2.mom2', 'sample_size'.
    SecondMoment.moment() = mom2 / count, so store mom2 = E[k k^T] * count, with
    count = number of tokens the statistic was accumulated over, in the dtype their
    tally would have accumulated in (mom2_dtype = float32)."""
    import numpy as np
    import torch
    fn = stats_file(hp, ds_name)
    if fn.exists():
        return fn
    st = torch.load(moment, weights_only=True)
    count = int(st["count"])  # tokens accumulated (= the stats stage's "tokens")
    mom2 = (st["moment"].double() * count).numpy().astype(getattr(np, hp["mom2_dtype"]))
    fn.parent.mkdir(parents=True, exist_ok=True)
    np.savez(fn, **{
        "mom2.constructor": "easyeditor.util.runningstats.SecondMoment()",
        "mom2.count": count,
        "mom2.mom2": mom2,
        "sample_size": hp["mom2_n_samples"],
    })
    return fn


def select_cases(data, n, case_ids_from=None):
    """The first n records of the REP file, or the records of the first n case_ids
    of a robustedit cases jsonl (in that file's order)."""
    with open(data) as f:
        recs = json.load(f)
    if case_ids_from:
        with open(case_ids_from) as f:
            ids = [json.loads(line)["case_id"] for line in f if line.strip()][:n]
        by_id = {r["case_id"]: r for r in recs}
        missing = [i for i in ids if i not in by_id]
        if missing:
            sys.exit(f"case_ids {missing} of {case_ids_from} are not in {data}")
        recs = [by_id[i] for i in ids]
    if len(recs) < n:
        sys.exit(f"only {len(recs)} cases available, --n-cases {n}")
    return recs[:n]


def prepare_all(moment, hparams=HPARAMS):
    import yaml
    with open(hparams) as f:
        hp = yaml.safe_load(f)
    return prep_pickle(), prep_wikitext(), prep_stats(hp, moment)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moment", type=Path, help="mom2.pt of the stats stage "
                    "(default: the single results/smollm2-135m/stats/*/mom2.pt)")
    ap.add_argument("--hparams", type=Path, default=HPARAMS)
    args = ap.parse_args()
    for p in prepare_all(args.moment or find_moment(), args.hparams):
        print(p)
