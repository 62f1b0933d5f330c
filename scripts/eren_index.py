"""Stage `eren_index`: the EREN notebooks as artifacts, one per data set, keyed by encoder and content.

    python scripts/eren_index.py
Writes <stage dir>/<dataset>/{index.faiss, notes.json, meta.json} (robustedit.eren.notebook.Notebook.save,
atomic) for every data set of eren.data (by default cfh: all 1,024 CounterFact-Hard edit statements, and
fever: the 1,024 FEVER edit statements), and index.json with the counts and encoding times.
"""
from __future__ import annotations

import time
from pathlib import Path

from robustedit.eren.notebook import Notebook
from robustedit.io import write_json
from robustedit.manifest import DataStore
from robustedit.pipeline.stage import stage_app
from robustedit.pipeline.eren import load_encoder_from, notebook_statements
from robustedit.stages import file_name


def build_notebook(encoder, kind: str, statements: list[str], folder: Path) -> dict:
    """Encode and index the statements (on the CPU index: saved files are device-independent), save."""
    t0 = time.perf_counter()
    notebook = Notebook(encoder, index=kind)
    notebook.add(statements)
    seconds = time.perf_counter() - t0
    notebook.save(folder)
    return {"n_notes": len(notebook), "build_s": seconds, "notes_per_s": len(notebook) / seconds}


@stage_app("eren_index")
def main(cfg: dict, out_dir: Path) -> None:
    store = DataStore(cfg["paths"]["data"])
    encoder = load_encoder_from(cfg, queries=False)  # notes only
    report = {}
    for dataset, statements in notebook_statements(cfg, store).items():
        report[dataset] = build_notebook(encoder, cfg["eren"]["index"], statements, out_dir / dataset)
        print(f"[eren_index] {dataset}: {report[dataset]['n_notes']} notes in {report[dataset]['build_s']:.1f} s",
              flush=True)
    write_json(out_dir / file_name("eren_index", "report"),
               {"encoder": encoder.name, "dim": encoder.dim, "index": cfg["eren"]["index"],
                "device": cfg["hardware"]["device"], "datasets": report})


if __name__ == "__main__":
    main()
