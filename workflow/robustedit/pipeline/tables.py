"""Table 1's rows (REP paper): one row per (model, method) of an evaluation summary, in percent; shared by
scripts/table1.py, scripts/gate_threshold.py (METRIC, AGGREGATION) and scripts/wandb_log.py.

With intervals (robustedit.analysis.bootstrap): every cell's 95% case-level bootstrap interval from the
summary's sibling per-case results (<split>.results.jsonl, EREN's <dataset>.items.jsonl), and paired
differences between methods on the same cases. Also the interval formatting the three table scripts share.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..analysis.bootstrap import CaseSums, Interval, bootstrap_interval, case_sums, paired_difference
from ..errors import ConfigError, DataIntegrityError, RecordError
from ..eren.evaluate import edit_quality
from ..eren.robustness import EREN_METRIC, item_value
from ..metrics import get_metric
from ..stages import file_suffix

METRIC, AGGREGATION = "exact_match", "micro"  # Table 1's (the REP paper's), also the gate table's and wandb's
GENERATION_METRIC = "generation_match"  # Table 1's generation-protocol rows (locality: generation_unchanged@1)
COLUMNS = ["model", "method", "n_cases", "success", "locality", "rephrase_id", "shuffle_id", "long_id",
           "rephrase_ood", "shuffle_ood", "long_ood", "paraphrase", "patil", "metric", "aggregation", "split"]
GROUP_OF = {"success": "success", "locality": "locality", "rephrase_id": "rephrase_id",
            "shuffle_id": "shuffle_id", "long_id": "long_id", "rephrase_ood": "rephrase_ood",
            "shuffle_ood": "shuffle_ood", "long_ood": "long_ood", "paraphrase": "paraphrase", "patil": "patil"}
METRIC_COLUMNS = list(GROUP_OF)  # Table 1's percentage columns, in order
UNEDITED, ROME = "Unedited", "ROME"  # the method names of Table 1's baseline rows
MINUS = " − "  # a paired-difference row's method: "ROME+REP − ROME"
TOLERANCE = 1e-6  # percent: a summary's value and the one recomputed from its results must agree to this


DEFAULT_SPLITS = ("valid", "test", "pool")  # the CounterFact splits conf/data/default.yaml names: tables/table1.csv


def table1_stem(report_splits: Sequence[str]) -> str:
    """Table 1's file name without suffix: `table1` when the runs report the default CounterFact splits
    (test, the papers'; valid in small runs), else `table1.<split>` (e.g. `table1.zsre`, a user's
    `table1.mine`), so another split's table never overwrites the papers'. Runs reporting several other
    splits share one table, named by all of them."""
    other = sorted(set(report_splits) - set(DEFAULT_SPLITS))
    return "table1" if not other else "table1." + "+".join(other)


def rows_from(summary: dict, metric: str, aggregation: str) -> list[dict]:
    rows = []
    stages = [("pre", UNEDITED)] if summary.get("include_unedited", True) else []
    for stage, method in stages + [("post", summary["method"])]:
        s = summary["summaries"][f"{stage}/{metric}/{aggregation}"]
        row = {"model": summary["model"], "method": method, "n_cases": s["n_cases"],
               "metric": f"{s['metric']}+{s['locality_metric']}", "aggregation": aggregation, "split": summary["split"]}
        for col, group in GROUP_OF.items():
            val = s["columns"].get(group)
            row[col] = "" if val is None else f"{val:.1f}"
        rows.append(row)
    return rows


# ---- per-case values and their intervals ------------------------------------------------------------------
def sibling(summary_path: Path, stage: str = "eval_rome", key: str = "results") -> Path:
    """The per-case records a summary was computed from: the `stage`'s `key` file beside its summary file
    (<name>.summary.json -> <name>.results.jsonl; the names are robustedit.stages.Stage.files)."""
    name, suffix = Path(summary_path).name, file_suffix(stage, "summary")
    if not name.endswith(suffix):
        raise ConfigError(f"{summary_path}: expected a <name>{suffix} file")
    return Path(summary_path).with_name(name[: -len(suffix)] + file_suffix(stage, key))


def _item_value(block: dict, stage: str) -> Callable[[dict, str], float]:
    """value(item, where) of an item as the summary block scored it (EREN: its generation-based scorer)."""
    if block["metric"] == EREN_METRIC:
        return lambda item, where: item_value(item, unedited=stage == "pre")
    main, loc = block["metric"], block["locality_metric"]

    def value(item: dict, where: str) -> float:
        rec, key = (item if stage == "post" else item["pre"]), (loc if item["group"] == "locality" else main)
        if key not in rec:
            raise RecordError(f"{where}: no {key} in the results")
        return rec[key]
    return value


def suite_case_sums(per_case: Sequence[dict], block: dict, stage: str) -> CaseSums:
    """Table 1's columns of a results.jsonl (one record per case: its items) as per-case sums and counts."""
    value, column_of = _item_value(block, stage), {g: c for c, g in GROUP_OF.items()}
    cases = []
    for case in per_case:
        cols: dict[str, list[float]] = {}
        for item in case["items"]:
            if item["group"] in column_of:
                cols.setdefault(column_of[item["group"]], []).append(value(item, f"case_id {case['case_id']}"))
        cases.append((case["case_id"], cols))
    return case_sums(cases, METRIC_COLUMNS)


def check_against(intervals: dict, values: dict, where: str) -> None:
    """Refuse results that do not reproduce their summary (a stale or foreign results file)."""
    for col, iv in intervals.items():
        want = values.get(col)
        got = None if iv is None else iv.value
        if (want is None) != (got is None) or (got is not None and abs(got - want) > TOLERANCE):
            raise DataIntegrityError(f"{where}: column {col} is {want} in the summary but {got} from the "
                                     f"per-case results; rerun the stage that wrote them")


def interval_cells(intervals: dict[str, Interval | None], columns: Sequence[str]) -> dict:
    """{col, col_lo, col_hi} per column (None where undefined)."""
    out = {}
    for col in columns:
        iv = intervals.get(col)
        out[col], out[f"{col}_lo"], out[f"{col}_hi"] = (None, None, None) if iv is None else (iv.value, iv.lo, iv.hi)
    return out


def with_bounds(columns: Sequence[str], interval_columns: Sequence[str]) -> list[str]:
    """CSV columns: each interval column followed by its _lo and _hi."""
    return [x for c in columns for x in ((c, f"{c}_lo", f"{c}_hi") if c in interval_columns else (c,))]


def md_cell(row: dict, col: str, interval_columns: Sequence[str]) -> str:
    """'63.1 [55.0, 70.8]' for an interval column, the plain value otherwise ('' for None)."""
    v = row.get(col)
    if v is None:
        return ""
    if col in interval_columns and isinstance(v, float):
        lo, hi = row[f"{col}_lo"], row[f"{col}_hi"]
        return f"{v:.1f} [{lo:.1f}, {hi:.1f}]"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def markdown(rows: Sequence[dict], columns: Sequence[str], interval_columns: Sequence[str]) -> list[str]:
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return md + ["| " + " | ".join(md_cell(r, c, interval_columns) for c in columns) + " |" for r in rows]


# ---- Table 1 ----------------------------------------------------------------------------------------------
TABLE1_CSV = ["model", "method", "protocol", "n_cases"] + with_bounds(METRIC_COLUMNS, METRIC_COLUMNS) + [
    "metric", "aggregation", "split"]


def _metric_name(block: dict) -> str:
    return f"{block['metric']}+{block['locality_metric']}"


def protocol_of(block: dict) -> str:
    """"teacher_forced" or "generation": how a summary block's metric scores an item (EREN's scorer and the
    generation_* metrics generate; the others read teacher-forced token scores)."""
    return "generation" if block["metric"] == EREN_METRIC else get_metric(block["metric"]).protocol


def table1_entries(summary: dict, per_case: Sequence[dict], metric: str, aggregation: str) -> list[dict]:
    """Score rows of one summary (the unedited model first when it has one), each with its CaseSums
    under "_table" (for paired differences), checked against the summary's own values."""
    rows = []
    stages = [("pre", UNEDITED)] if summary.get("include_unedited", True) else []
    for stage, method in stages + [("post", summary["method"])]:
        block = summary["summaries"][f"{stage}/{metric}/{aggregation}"]
        table = suite_case_sums(per_case, block, stage)
        intervals = bootstrap_interval(table, aggregation)
        check_against(intervals, block["columns"], f"{summary['model']} {method} ({summary['split']})")
        rows.append({"model": summary["model"], "method": method, "protocol": protocol_of(block),
                     "n_cases": block["n_cases"], **interval_cells(intervals, METRIC_COLUMNS),
                     "metric": _metric_name(block), "aggregation": aggregation, "split": summary["split"],
                     "_table": table})
    return rows


def difference_row(row: dict, base: dict, aggregation: str, columns: Sequence[str]) -> dict | None:
    """row − base on the cases both cover (all of them for ROME+REP; EREN's seeded subset); None if none."""
    a, b = row["_table"], base["_table"]
    common = [c for c in a.case_ids if c in set(b.case_ids)]
    if not common:
        return None
    diff = paired_difference(a.restrict(common), b.restrict(common), aggregation)
    metric = row["metric"] if row["metric"] == base["metric"] else f"{row['metric']}{MINUS}{base['metric']}"
    return {**{k: v for k, v in row.items() if k != "_table"}, "method": f"{row['method']}{MINUS}{base['method']}",
            "n_cases": len(common), **interval_cells(diff, columns), "metric": metric}


def scored_rows(entries: Sequence[tuple[dict, Sequence[dict]]], metric: str = METRIC,
                aggregation: str = AGGREGATION) -> list[dict]:
    """Score rows (with their CaseSums under "_table") of (summary, per-case results) pairs in order, each
    (model, method) once (the unedited row of a model appears once)."""
    rows, seen = [], set()
    for summary, per_case in entries:
        for row in table1_entries(summary, per_case, metric, aggregation):
            if (row["model"], row["method"]) not in seen:
                seen.add((row["model"], row["method"]))
                rows.append(row)
    return rows


def table1_rows(entries: Sequence[tuple[dict, Sequence[dict]]], metric: str = METRIC,
                aggregation: str = AGGREGATION, scored: list[dict] | None = None) -> list[dict]:
    """Rows of (summary, per-case results) pairs in order, each (model, method) once; after every method row
    of a model other than ROME and Unedited, its paired difference to that model's ROME row. `scored`: the
    score rows, when the caller already has them (scored_rows)."""
    rows = scored_rows(entries, metric, aggregation) if scored is None else scored
    rome = {r["model"]: r for r in rows if r["method"] == ROME}
    out = []
    for row in rows:
        out.append({k: v for k, v in row.items() if k != "_table"})
        if row["method"] not in (ROME, UNEDITED) and row["model"] in rome:
            diff = difference_row(row, rome[row["model"]], aggregation, METRIC_COLUMNS)
            if diff is not None:
                out.append(diff)
    return out


PROTOCOL_GAP = "generation − teacher_forced"  # the protocol column of a row comparing a method's two protocols


def protocol_gap_rows(teacher_forced: Sequence[dict], generation: Sequence[dict],
                      aggregation: str = AGGREGATION) -> list[dict]:
    """For every (model, method) scored under both protocols (scored_rows of each), its generation score minus
    its teacher-forced score on the same cases, paired: what the protocol alone changes."""
    tf = {(r["model"], r["method"]): r for r in teacher_forced}
    out = []
    for row in generation:
        base = tf.get((row["model"], row["method"]))
        diff = None if base is None else difference_row(row, base, aggregation, METRIC_COLUMNS)
        if diff is not None:
            out.append({**diff, "method": row["method"], "protocol": PROTOCOL_GAP})
    return out


# ---- EREN's table (eren_eval's items) ---------------------------------------------------------------------
EREN_INTERVAL_COLUMNS = ["ES", "BP", "EQ", "fallback_in_scope", "fallback_out_of_scope",
                         "own_note_retrieved_in_scope"]
_EREN_COLUMNS = {  # column -> (in scope?, the item's flag), as robustedit.eren.evaluate.summarize counts them
    "ES": (True, lambda it: it["correct"]), "BP": (False, lambda it: it["unchanged"]),
    "fallback_in_scope": (True, lambda it: it["step"] == 2),
    "fallback_out_of_scope": (False, lambda it: it["step"] == 2),
    "own_note_retrieved_in_scope": (True, lambda it: it["own_note_retrieved"])}
EQ = {"EQ": lambda v: np.vectorize(edit_quality, otypes=[float])(v["ES"], v["BP"])}  # EQ of each resample


def eren_case_sums(items: Sequence[dict], method: str) -> CaseSums:
    """One method's eren_eval items (records of <dataset>.items.jsonl) as per-record sums: a record's
    in-scope and out-of-scope questions stay together (FEVER: edit and check records are records apiece)."""
    cases: dict = {}
    for it in items:
        if it["method"] != method:
            continue
        cols = cases.setdefault(it["id"], {c: [] for c in _EREN_COLUMNS})
        for col, (in_scope, flag) in _EREN_COLUMNS.items():
            if it["in_scope"] == in_scope:
                cols[col].append(float(flag(it)))
    return case_sums(list(cases.items()), list(_EREN_COLUMNS))
