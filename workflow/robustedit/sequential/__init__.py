"""Many edits: the sequential protocol (robustedit.sequential.protocol) and the editors that write each edit
into the weights of the model as already edited (robustedit.sequential.editors); EREN's growing notebook
(robustedit.sequential.eren, imported on use: it loads the retrieval stack)."""
from .editors import SEQUENTIAL_EDITORS, AlphaEditSequential, MEMITSequential, ROMESequential, SequentialEditor
from .protocol import ALL, edit_counts, edit_order, request_of, run_sequence

__all__ = ["ALL", "SEQUENTIAL_EDITORS", "AlphaEditSequential", "MEMITSequential", "ROMESequential",
           "SequentialEditor", "edit_counts", "edit_order", "request_of", "run_sequence"]
