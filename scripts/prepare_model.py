"""Stage `model`: convert a model source into resources/models/<name>/ once.

    python scripts/prepare_model.py model=gemma3-270m
The folder is replaced atomically and carries SOURCE.json (what it was made from).
"""
from __future__ import annotations

import sys
import time

import hydra

from robustedit.io import write_json
from robustedit.models.convert import prepare_model
from robustedit.pipeline.config import conf_dir, to_plain, validate
from robustedit.pipeline.stage import model_dir


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def main(raw_cfg) -> None:
    cfg = validate(to_plain(raw_cfg), edit_model=False)  # also prepares readers (eren.reader=flan-t5-xl)
    out = model_dir(cfg)
    start = time.time()
    info = prepare_model(cfg["model"], out)
    write_json(out / "SOURCE.json", {"model": cfg["model"], "prepared": info})
    print(f"[model] {cfg['model']['name']} prepared in {time.time() - start:.1f} s -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
