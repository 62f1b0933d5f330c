"""Where the pipeline's Hydra config lives: conf/ of the repository this package is the editable install of."""
from __future__ import annotations

from pathlib import Path

import robustedit
from robustedit.errors import ConfigError

# The repository root for this editable/src layout: <repo>/workflow/robustedit/__init__.py
REPO = Path(robustedit.__file__).resolve().parents[2]
CONF = REPO / "conf"


def conf_dir() -> Path:
    """CONF, or a clear error when this robustedit is not the editable install of a checkout (no conf/)."""
    if not (CONF / "config.yaml").is_file():
        raise ConfigError(f"no Hydra config at {CONF}/config.yaml: robustedit ({robustedit.__file__}) must be the "
                          f"editable install (`pip install -e .`) of a robustedit checkout, whose conf/ it reads")
    return CONF
