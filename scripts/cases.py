"""Stage `cases`: one JSONL of robustness test cases per (model, split).

    python scripts/cases.py model=gemma3-270m job.split=valid
Writes <results>/<model>/cases/<hash>/<split>.jsonl and <split>.stats.json (counts at each step).
"""
from __future__ import annotations

import time
from pathlib import Path

from robustedit.data.cases import attach_perturbations, attach_rephrases
from robustedit.data.counterfact import join_case, pool_index, pool_to_rep
from robustedit.data.filtering import teacher_forced_exact_match
from robustedit.data.splits import SplitSource, check_unique_ids, split_source
from robustedit.data.zsre import zsre_case
from robustedit.errors import ConfigError, RecordError
from robustedit.io import read_json, write_json, write_jsonl
from robustedit.manifest import DataStore
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.stage import model_dir, stage_app
from robustedit.pipeline.wikitext import context_words
from robustedit.stages import file_name


def load_split(store: DataStore, data_cfg: dict, split: str) -> tuple[list[dict], str, SplitSource]:
    """The split's case records (our schema, before filtering; at most the split's max_cases, else
    data.max_cases), their file and the split's entry."""
    if split not in data_cfg["split_files"]:
        raise ConfigError(f"data.splits has {split!r} but data.split_files has no entry for it")
    entry = split_source(data_cfg["split_files"][split], split)
    rel = entry.file
    limit = data_cfg["max_cases"] if entry.max_cases is None else entry.max_cases  # None: all
    if entry.kind == "zsre":  # standalone records: no pool to join
        cases = [zsre_case(r, split, rel, i) for i, r in enumerate(read_records(store, rel)[:limit])]
        check_unique_ids(cases, rel)
        return cases, rel, entry
    pool_file = data_cfg["pool_file"]
    pool = pool_index(read_json(store.path(pool_file)), pool_file)
    patil = read_json(store.path(data_cfg["patil_file"]))
    if rel is None:  # the pool itself, flattened to the split shape
        records, rel = [pool_to_rep(pool[cid]) for cid in sorted(pool)], pool_file
    else:
        records = read_records(store, rel)
    cases = [join_case(r, pool, patil, split, rel, i) for i, r in enumerate(records[:limit])]
    check_unique_ids(cases, rel)
    return cases, rel, entry


def read_records(store: DataStore, rel: str) -> list:
    records = read_json(store.path(rel))
    if not isinstance(records, list):
        raise RecordError(f"{rel}: expected a JSON list of records")
    return records


def llm_rephrases(cfg: dict, subjects: list[str]) -> tuple[dict[str, list[str]], str, dict]:
    from robustedit.pipeline.rephrase import rephrases_for  # the LLM backends are only imported when needed

    return rephrases_for(cfg, subjects)


@stage_app("cases")
def main(cfg: dict, out_dir: Path) -> None:
    split = cfg["job"]["split"]
    data_cfg = cfg["data"]
    if split not in data_cfg["splits"]:
        raise ConfigError(f"job.split={split!r} is not one of data.splits={data_cfg['splits']}")
    store = DataStore(cfg["paths"]["data"])
    cases, source, entry = load_split(store, data_cfg, split)
    stats: dict = {"split": split, "source": source, "kind": entry.kind, "n_records": len(cases)}

    lm = load_model(model_dir(cfg), cfg["model"], cfg["hardware"]["device"], cfg["hardware"]["dtype"])
    # the split's own `filter` replaces data.filter.enabled; turned off there, the known facts are still counted
    keep_known = data_cfg["filter"]["enabled"] if entry.filter is None else entry.filter
    if keep_known or entry.filter is False:
        start = time.time()
        known = teacher_forced_exact_match(
            lm.model, lm.arch, lm.tokenizer, [c["prompt"] for c in cases], [c["target_true"] for c in cases],
            cfg["hardware"]["batch_size"], resolve_device(cfg["hardware"]["device"]),
            where=[f"{source} case_id {c['case_id']}: " for c in cases])
        n_known = sum(known)
        if keep_known:
            cases = [c for c, k in zip(cases, known) if k]
        stats["filter"] = {"rule": "teacher-forced exact match of prompt + ' ' + target_true",
                           **({} if keep_known else {"applied": False, "known": n_known,
                                                     "why": f"data.split_files.{split}.filter=false"}),
                           "kept": len(cases), "known_fraction": round(n_known / max(1, len(known)), 4),
                           "seconds": round(time.time() - start, 1)}
        print(f"[cases] {split}: model knows {n_known}/{len(known)} facts; keeping {len(cases)}", flush=True)
    if not cases:
        raise RecordError(f"{split}: no cases left after filtering; nothing to write")

    rp = data_cfg["rephrase"]
    missing = [c["subject"] for c in cases if not (rp["use_dataset"] and c["dataset_subject_rephrases"])]
    generated, llm_source, llm_stats = llm_rephrases(cfg, sorted(set(missing))) if missing else ({}, None, {})
    stats["rephrase"] = {"from_dataset": len(cases) - len(missing), "from_llm": len(missing), **llm_stats}

    words = context_words(store, data_cfg["long_context"])
    out = []
    for c in cases:
        if rp["use_dataset"] and c["dataset_subject_rephrases"]:
            c = attach_rephrases(c, c["dataset_subject_rephrases"], "dataset", rp["n"], data_cfg["id_fraction"])
        else:
            c = attach_rephrases(c, generated[c["subject"]], llm_source, rp["n"], data_cfg["id_fraction"])
        out.append(attach_perturbations(
            c, lm.tokenizer, words, seed=cfg["seed"], n_shuffles=data_cfg["shuffle"]["n"],
            n_words=data_cfg["long_context"]["n_words"], n_held=data_cfg["long_context"]["n_held"],
            id_fraction=data_cfg["id_fraction"], shuffle_join=data_cfg["shuffle"]["join"]))
    stats["n_cases"] = len(out)
    stats["n_with_shuffles"] = sum(1 for c in out if c["shuffled_subjects"]["id"])
    stats["n_without_rephrases"] = sum(1 for c in out if not c["subject_rephrases"]["id"])
    write_jsonl(out_dir / file_name("cases", "cases", split=split), out)
    write_json(out_dir / file_name("cases", "stats", split=split), stats)


if __name__ == "__main__":
    main()
