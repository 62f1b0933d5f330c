"""Stage `templates`: ROME's context templates sampled from the model with a seeded generator.

    python scripts/templates.py model=gemma3-270m seed=1
Writes <stage dir>/templates.json (["{}", "The ... . {}", ...]).
"""
from __future__ import annotations

from pathlib import Path

from robustedit.io import write_json
from robustedit.models.load import load_model, resolve_device
from robustedit.rome.templates import generate_context_templates
from robustedit.seeding import torch_generator
from robustedit.pipeline.stage import model_dir, stage_app
from robustedit.stages import file_name


@stage_app("templates")
def main(cfg: dict, out_dir: Path) -> None:
    hw, tp = cfg["hardware"], cfg["rome"]["templates"]
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    templates = generate_context_templates(
        lm.model, lm.tokenizer, torch_generator(cfg["seed"], "context_templates"),
        length_params=tp["length_params"], prefixes=tp["prefixes"], top_k=tp["top_k"],
        device=resolve_device(hw["device"]))
    write_json(out_dir / file_name("templates", "templates"), templates)
    print("\n".join(templates), flush=True)


if __name__ == "__main__":
    main()
