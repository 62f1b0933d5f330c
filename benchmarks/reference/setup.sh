#!/usr/bin/env bash
# Set up the REP reference benchmark (see README.md beside this file): export the
# authors' EasyEditOurs at commit 5c54348, patch it for CPU/offline use, make a venv,
# write the ROME hparams for SmolLM2-135M and prepare the offline data.
#
#   git clone https://github.com/ElliottYan/RobustKeyEdit /path/to/RobustKeyEdit
#   REP_REPO=/path/to/RobustKeyEdit [REFBENCH_DIR=../refbench] bash benchmarks/reference/setup.sh
#
# REP_REPO: a clone or a bare git dir of ElliottYan/RobustKeyEdit (required).
# REFBENCH_DIR: the work dir (default: refbench/ next to this repo). Its EasyEditOurs/
# must not exist yet (remove it to set up again); the venv and data are reused.
# Needs this repo's default run for smollm2-135m: resources/models/smollm2-135m and
# exactly one results/smollm2-135m/stats/*/mom2.pt (override with MOMENT=path).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
COMMIT=5c54348
MODEL=smollm2-135m
PYTHON=${PYTHON:-python3}
die() { echo "setup.sh: $*" >&2; exit 1; }

: "${REP_REPO:?set REP_REPO to a clone of https://github.com/ElliottYan/RobustKeyEdit}"
git -C "$REP_REPO" cat-file -e "$COMMIT^{commit}" 2>/dev/null \
  || die "$REP_REPO is not a git dir holding commit $COMMIT of ElliottYan/RobustKeyEdit"
[ -f "$REPO/resources/models/$MODEL/config.json" ] \
  || die "$REPO/resources/models/$MODEL missing: run the repo's prepare_model stage first"
if [ -z "${MOMENT:-}" ]; then
  shopt -s nullglob
  moments=("$REPO"/results/$MODEL/stats/*/mom2.pt)
  shopt -u nullglob
  [ ${#moments[@]} -eq 1 ] || die "need exactly one results/$MODEL/stats/*/mom2.pt, found ${#moments[@]}; set MOMENT=path"
  MOMENT=${moments[0]}
fi
[ -f "$MOMENT" ] || die "$MOMENT not found"

mkdir -p "${REFBENCH_DIR:-$REPO/../refbench}"
WORK=$(cd "${REFBENCH_DIR:-$REPO/../refbench}" && pwd -P)
export REFBENCH_DIR=$WORK
EE=$WORK/EasyEditOurs
[ ! -e "$EE" ] || die "$EE exists; remove it to set up again (patches apply to a fresh export only)"
echo "== work dir $WORK; reference $REP_REPO @ $COMMIT"

# 1. export the released code; a local git repo so `git -C $EE diff` shows the patches
tmp=$(mktemp -d "$WORK/.export.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
git -C "$REP_REPO" archive "$COMMIT" EasyEditOurs | tar -x -C "$tmp"
git -C "$tmp/EasyEditOurs" init -q
git -C "$tmp/EasyEditOurs" add -A
git -C "$tmp/EasyEditOurs" -c user.name=refbench -c user.email=refbench@localhost \
  -c commit.gpgsign=false commit -q -m "EasyEditOurs from RobustKeyEdit @ $COMMIT"

# 2. CPU/offline source patches: each substitution must match exactly as often as stated
"$PYTHON" - "$tmp/EasyEditOurs" <<'PY'
import sys
from pathlib import Path

root = Path(sys.argv[1])

def sub(rel, old, new, count=1, between=None):
    """Replace `old` by `new` in root/rel; it must occur exactly `count` times (in the
    text from the first anchor of `between` to the second, if given)."""
    path = root / rel
    text = path.read_text()
    lo, hi = 0, len(text)
    if between:
        lo, hi = text.find(between[0]), text.find(between[1])
        if not 0 <= lo < hi:
            sys.exit(f"patch {rel}: anchors {between} not found in order")
    found = text.count(old, lo, hi)
    if found != count:
        sys.exit(f"patch {rel}: expected {count} x {old!r}, found {found}")
    path.write_text(text[:lo] + text[lo:hi].replace(old, new) + text[hi:])
    print(f"patched {rel}: {count} x {old.strip()!r}")

CPU = "  # REFBENCH: CPU-only"
# no CUDA: every device string on the ROME single-edit path becomes "cpu"
sub("easyeditor/editors/erasor.py", "self.model.to(f'cuda:{hparams.device}')",
    "self.model.to('cpu')  # REFBENCH: CPU-only (was f'cuda:{hparams.device}')")
sub("easyeditor/editors/erasor.py", 'v.to(f"cuda:{self.hparams.device}")', 'v.to("cpu")' + CPU,
    between=("    def edit(self,", "    def ike_edit(self,"))  # weight restore in edit() only
sub("easyeditor/models/rome/compute_u.py", 'stat.mom2.moment().to(f"cuda:{hparams.device}")',
    'stat.mom2.moment().to("cpu")' + CPU)
sub("easyeditor/models/rome/compute_v.py", 'f"cuda:{hparams.device}"', '"cpu"', count=5)
sub("easyeditor/evaluate/evaluate_utils.py", 'inputs = inputs.to(f"cuda:{device}")',
    'inputs = inputs.to("cpu")' + CPU)

# fluency: nltk.word_tokenize needs the punkt_tab data download; fall back to the same
# pipeline with an untrained Punkt sentence splitter when that data is absent
FALLBACK = '''def _pick_word_tokenize():
    # REFBENCH: nltk.word_tokenize needs the 'punkt_tab' data package, which
    # cannot be downloaded offline (no PyPI package ships it). Use it if present,
    # else the same pipeline (Punkt sentence split + NLTKWordTokenizer) with an
    # untrained PunktSentenceTokenizer (no English abbreviation list).
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return nltk.word_tokenize
    except LookupError:
        from nltk.tokenize.punkt import PunktSentenceTokenizer
        from nltk.tokenize import _treebank_word_tokenizer
        punkt = PunktSentenceTokenizer()
        return lambda text: [t for s in punkt.tokenize(text) for t in _treebank_word_tokenizer.tokenize(s)]


_word_tokenize = _pick_word_tokenize()


'''
sub("easyeditor/evaluate/evaluate_utils.py", "def compute_freq(sentence, n=2):\n",
    FALLBACK + "def compute_freq(sentence, n=2):\n")
sub("easyeditor/evaluate/evaluate_utils.py", "tokens = nltk.word_tokenize(sentence)",
    "tokens = _word_tokenize(sentence)  # REFBENCH: was nltk.word_tokenize(sentence)")
PY
mv "$tmp/EasyEditOurs" "$EE"

# 3. venv (exact torch pin: the CPU wheel; a looser pin can pull a multi-GB CUDA build)
[ -x "$WORK/.venv/bin/python" ] || "$PYTHON" -m venv "$WORK/.venv"
"$WORK/.venv/bin/pip" install -q torch==2.13.0
"$WORK/.venv/bin/pip" install -q transformers==5.23.0 datasets==5.2.0 higher==0.2.1 nltk==3.10.4 \
  scipy==1.17.1 numpy==2.4.6 pyyaml==6.0.4

# 4. hparams: the authors' our_hparams/ROME/llama-7b.yaml with the SmolLM2 changes. The model
# is reached through a symlink whose name contains "llama": BaseErasor only loads LLaMA-named
# models through its AutoModelForCausalLM/AutoTokenizer branch (pad=eos, right padding).
mkdir -p "$WORK/models" "$WORK/hparams/ROME"
ln -sfn "$REPO/resources/models/$MODEL" "$WORK/models/llama-$MODEL"
"$PYTHON" - "$EE/our_hparams/ROME/llama-7b.yaml" "$WORK/hparams/ROME/$MODEL.yaml" \
  "$WORK/models/llama-$MODEL" "$EE/data/stats" <<'PY'
import re
import sys

src, out, model, stats = sys.argv[1:]
text = open(src).read()
changes = {  # key: (new value, why)
    "model_name": (f'"{model}"', "local SmolLM2-135M via a symlink named llama-* (BaseErasor's LLaMA branch)"),
    "stats_dir": (f'"{stats}"', "absolute (was ./data/stats)"),
    "layers": ("[4]", "was [5] (LLaMA-2-7B); layer 4 of 30 for SmolLM2-135M"),
    "v_loss_layer": ("29", "was 31 = last layer of LLaMA-2-7B; 29 = last layer of SmolLM2-135M"),
    "model_parallel": ("false", "was true (device_map='auto' over GPUs); one CPU device"),
}
for key, (value, why) in changes.items():
    text, n = re.subn(rf"^{key}:.*$", f"{key}: {value}  # REFBENCH: {why}", text, flags=re.M)
    if n != 1:
        sys.exit(f"hparams: expected one '{key}:' line in {src}, found {n}")
with open(out, "w") as f:
    f.write("# our_hparams/ROME/llama-7b.yaml from ElliottYan/RobustKeyEdit @ 5c54348, "
            "changed only where marked (REFBENCH).\n" + text.rstrip("\n") + "\n")
print(f"wrote {out}")
PY

# 5. offline data: second moment as their layer_stats cache, paraphrase pickle, WikiText
"$WORK/.venv/bin/python" "$HERE/prepare_data.py" --moment "$MOMENT" \
  --hparams "$WORK/hparams/ROME/$MODEL.yaml"
echo "== done. Run: REFBENCH_DIR=$WORK $WORK/.venv/bin/python $HERE/run_reference.py --dry-run"
