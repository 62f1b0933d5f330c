"""One stage, one name; each stage file named once. Rule X runs scripts/X.py; the rules and the scripts name a
stage's files only through robustedit.stages.Stage.files (the rules' out/upstream/split_file helpers, the
scripts' stage_file/file_name), never by spelling them."""
import ast
import re

import pytest

from conftest import REPO
from robustedit.stages import STAGES, file_name, file_pattern

RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
SCRIPTS = sorted((REPO / "scripts").glob("*.py"))
# Rules that run a script of another name: the plotting rules plot_<figure> share scripts/plot.py <figure>,
# and wandb_log_<target> logs another target's tables with scripts/wandb_log.py
SHARED_SCRIPTS = {"plot": "plot_", "wandb_log": "wandb_log_"}


def rules_and_scripts() -> dict[str, set[str]]:
    """rule name -> the scripts its body runs."""
    out: dict[str, set[str]] = {}
    for path in RULE_FILES:
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            body = block
            scripts = set(re.findall(r"scripts/(\w+)\.py", body))
            scripts |= set(re.findall(r"stage_shell\(\"(\w+)\"\)", body))
            out[name] = scripts
    return out


def test_every_rule_runs_the_script_of_its_name():
    found = rules_and_scripts()
    assert "table1" in found and "rome" in found
    for rule, scripts in found.items():
        for script in scripts:
            assert script == rule or rule.startswith(SHARED_SCRIPTS.get(script, "\0")), (rule, script)


def test_every_script_is_run_by_a_rule_of_its_name():
    run = {s for scripts in rules_and_scripts().values() for s in scripts}
    rules = set(rules_and_scripts())
    for path in SCRIPTS:
        assert path.stem in run, f"{path.name} is run by no rule"
        assert path.stem in rules or path.stem in SHARED_SCRIPTS, f"{path.name} names no rule"


def _code_strings(path):
    """String constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def _suffixes():
    """What identifies each declared file when spelled: its name after the placeholders (".edits.pt", "mom2.pt")."""
    return {re.sub(r"^.*\}", "", pattern) for stage in STAGES.values() for pattern in stage.files.values()}


def test_no_script_or_rule_spells_a_stage_file():
    suffixes = _suffixes()
    assert ".edits.pt" in suffixes and "mom2.pt" in suffixes and ".results.jsonl" in suffixes
    for path in SCRIPTS:
        for s in _code_strings(path):
            assert not any(s.endswith(x) for x in suffixes), f"{path.name} spells the stage file {s!r}"
    for path in RULE_FILES:
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        assert "{{hash}}" not in code or path.name == "common.smk", f"{path.name} spells a stage directory"
        for x in suffixes:
            assert f'{x}"' not in code, f"{path.name} spells the stage file *{x}"


def test_rule_helpers_and_scripts_agree_on_the_file_names():
    assert file_name("rome", "edits", split="valid") == "valid.edits.pt"
    assert file_name("eren_eval", "summary", eren_dataset="cfh") == "cfh.summary.json"
    assert file_pattern("eval_rep", "results") == "{split}.results.jsonl"
    with pytest.raises(Exception, match="stage 'rome' has no file 'adaptors'"):
        file_pattern("rome", "adaptors")
    with pytest.raises(Exception, match="needs split="):
        file_name("rome", "edits")
