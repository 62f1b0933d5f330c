"""Shared setup of the EREN stage scripts (scripts/eren_*.py; not a stage): the encoder, the reader and the data sets,
each built from the composed config with an explicit device."""
from __future__ import annotations

from pathlib import Path

from robustedit.errors import ConfigError


def reader_dir(cfg: dict) -> Path:
    """The prepared model folder of the reader (eren.reader), made by the prepare_model rule."""
    return Path(cfg["paths"]["models"]) / cfg["eren"]["reader"]


def load_encoder_from(cfg: dict, queries: bool = True):
    """The notebook encoder (eren.encoder) on hardware.device, cutting over-long queries on the
    eren.query_truncation side; `queries=False` (eren_index: notes only) leaves that key unread."""
    from robustedit.eren.encoder import DEFAULT_QUERY_TRUNCATION, load_encoder

    side = cfg["eren"]["query_truncation"] if queries else DEFAULT_QUERY_TRUNCATION
    return load_encoder(cfg["eren"]["encoder"], device=cfg["hardware"]["device"],
                        batch_size=cfg["eren"]["encoder_batch_size"], query_truncation=side)


def reader_model_cfg(cfg: dict) -> dict:
    """The reader's model description, conf/model/<eren.reader>.yaml, checked against conf/schema.json's
    `model` part. Readers are not composed into the run's config, so Hydra overrides of `model.*` apply to
    the edit model only."""
    import json

    import jsonschema
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from robustedit.pipeline.paths import conf_dir

    conf = conf_dir()
    name = cfg["eren"]["reader"]
    path = conf / "model" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf / "model").glob("*.yaml"))
        raise ConfigError(f"eren.reader={name!r}: no model config {path}; known: {known}")
    try:
        model_cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"eren.reader={name!r}: cannot read {path}: {e}") from e
    schema = json.loads((conf / "schema.json").read_text())["properties"]["model"]
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(model_cfg), key=lambda e: list(e.path))
    if errors:
        lines = [f"  model.{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:10]]
        raise ConfigError(f"eren.reader={name!r}: invalid model config {path}:\n" + "\n".join(lines))
    if model_cfg["name"] != name:
        raise ConfigError(f"eren.reader={name!r}: {path} is named {model_cfg['name']!r}")
    from robustedit.eren.reader import reader_kind

    reader_kind(model_cfg)  # an unknown family -> a named error
    return model_cfg


def load_reader_from(cfg: dict):
    """The reader (eren.reader; FLAN-T5 or a chat model, by its model config) on hardware.device in
    hardware.dtype, hardware.batch_size prompts per batch, wrapped so the stage can report how many
    generations it ran and how long they took."""
    from robustedit.eren.reader import TimedReader
    from robustedit.eren.reader_load import load_reader

    hw = cfg["hardware"]
    return TimedReader(load_reader(reader_dir(cfg), reader_model_cfg(cfg), device=hw["device"], dtype=hw["dtype"],
                                   batch_size=hw["batch_size"], progress=True))


def datasets(cfg: dict) -> dict[str, tuple[str, str]]:
    """name -> (file, kind) of every configured data set (eren.data, in config order)."""
    from robustedit.eren.data import dataset_spec

    return {name: dataset_spec(name, value) for name, value in cfg["eren"]["data"].items()}


def load_dataset(cfg: dict, store, dataset: str):
    """(kind, records) of a configured data set; fact_check: (edits, checks), the halves of the file."""
    from robustedit.eren.data import load_fever, load_qa

    specs = datasets(cfg)
    if dataset not in specs:
        raise ConfigError(f"job.dataset={dataset!r} is not an EREN data set; use one of {sorted(specs)}")
    file, kind = specs[dataset]
    # a file of paths.data (sha256-checked against its MANIFEST.json) or a user file named by its path
    path = store.path(file)
    return kind, (load_qa(path) if kind == "qa" else load_fever(path))


def notebook_statements(cfg: dict, store) -> dict[str, list[str]]:
    """Every edit statement of each configured data set (fact_check: the edit half of the file)."""
    from robustedit.eren.data import edit_statements

    out = {}
    for name in datasets(cfg):
        kind, records = load_dataset(cfg, store, name)
        out[name] = edit_statements(records if kind == "qa" else records[0])
    return out


def _scored(cfg: dict, kind: str, records):
    """The seeded subsample eren_eval scores: eren.n_records records (fact_check: edit and check records alike,
    as robustedit.eren.evaluate.run_fever)."""
    from robustedit.eren.data import subsample

    n, seed = cfg["eren"]["n_records"], cfg["seed"]
    if kind == "qa":
        return subsample(records, n, seed)
    edits, checks = records
    return subsample(edits, n, seed, "eren_fever_edits"), subsample(checks, n, seed, "eren_fever_checks")


def dataset_items(cfg: dict, store, dataset: str) -> tuple[str, list[dict], list[str], dict]:
    """(task, evaluation items, every edit statement of the data set, counts) for eren_eval.

    The items come from the seeded subsample of eren.n_records records (_scored); the statements are all of the
    data set's edits.
    """
    from robustedit.eren.data import TASKS, edit_statements
    from robustedit.eren.evaluate import fever_items, qa_items

    kind, records = load_dataset(cfg, store, dataset)
    chosen = _scored(cfg, kind, records)
    if kind == "qa":
        return TASKS[kind], qa_items(chosen), edit_statements(records), {
            "n_records": len(records), "n_records_evaluated": len(chosen)}
    edits, _ = records
    chosen_e, chosen_c = chosen
    return TASKS[kind], fever_items(chosen_e, chosen_c), edit_statements(edits), {
        "n_records": len(edits), "n_records_evaluated": len(chosen_e), "n_checks_evaluated": len(chosen_c)}


def calibration_items(cfg: dict, store, dataset: str) -> list[dict]:
    """The queries eren_score's threshold is chosen on: the items of eren.score_gate.n_calibration seeded records
    that eren_eval does not score (fact_check: as many edit and check records); empty if every record is scored."""
    from robustedit.eren.evaluate import fever_items, qa_items
    from robustedit.eren.gate import held_out

    m, seed = cfg["eren"]["score_gate"]["n_calibration"], cfg["seed"]
    kind, records = load_dataset(cfg, store, dataset)
    chosen = _scored(cfg, kind, records)
    if kind == "qa":
        return qa_items(held_out(records, chosen, m, seed, "eren_score_calibration"))
    (edits, checks), (chosen_e, chosen_c) = records, chosen
    return fever_items(held_out(edits, chosen_e, m, seed, "eren_score_calibration_edits"),
                       held_out(checks, chosen_c, m, seed, "eren_score_calibration_checks"))
