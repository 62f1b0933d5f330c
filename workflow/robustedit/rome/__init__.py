"""ROME editing core: second-moment statistics, context templates, left vector u, right vector v*."""
from .compute_u import MomentSolver, compute_u, mean_template_keys
from .compute_v import VResult, compute_v
from .execute import execute_rome, execute_rome_detailed, validate_request
from .hparams import ROMEHyperParams
from .stats import MomentResult, SecondMoment, compute_second_moment, select_documents
from .templates import check_bare_first, generate_context_templates

__all__ = [
    "MomentResult", "MomentSolver", "ROMEHyperParams", "SecondMoment", "VResult", "check_bare_first",
    "compute_second_moment", "compute_u", "compute_v", "execute_rome", "execute_rome_detailed",
    "generate_context_templates", "mean_template_keys", "select_documents", "validate_request",
]
