"""Import stubs for packages the reference imports at module level but never
uses on the single-edit ROME path (IKE/MEND/SERAC/multimodal/LoRA/plotting code).

A stub module answers any attribute with a fresh dummy class, so
`from X import Y`, `class Foo(Y)`, `isinstance(obj, Y)` (always False) and
decorators at import time all work. Anything that is *called* on the ROME path
would show up immediately as a wrong result, so stubbed names must stay unused;
`datasets.load_dataset` / `load_from_disk` raise ConnectionError, which is
exactly what the real library does on this offline machine.

Stubs are served only to import statements in the reference's own source files
(the directory given to install()); run_reference.py calls hide() right after
importing the reference.
"""
import importlib.abc
import importlib.machinery
import sys
import types

STUBBED = {
    "peft", "sentence_transformers", "matplotlib", "seaborn",
    "timm", "torchvision", "iopath", "fairscale", "cv2", "einops", "FOCS",
    "sklearn", "hydra", "omegaconf", "PIL", "openai",
    "zhipuai", "dashscope", "tiktoken", "accelerate", "nltk_data",
    # the reference's own multimodal (BLIP-2 / MiniGPT-4) models: imported by
    # easyeditor.trainer at package import, never used by ROME; their source
    # does not import under transformers 5 (removed modeling_utils helpers)
    "easyeditor.trainer.blip2_models",
    # imported by easyeditor/util/alg_dict.py but absent from the released repo
    # (SUE, FT-Api, FT-neg editors); only their ALG_DICT entries reference them
    "easyeditor.models.sue", "easyeditor.models.ft_api", "easyeditor.models.ft_neg",
}


def _is_stubbed(fullname):
    return any(fullname == s or fullname.startswith(s + ".") for s in STUBBED)

USED = set()    # stub attributes looked up (mostly at import time)
CALLED = set()  # stub classes instantiated / stub objects called (should stay empty at run time)


class _DummyMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _dummy(f"{cls.__qualname__}.{name}")


def _dummy(qualname):
    def __init__(self, *a, **k):
        CALLED.add(qualname)

    def __call__(self, *a, **k):
        CALLED.add(qualname + "()")
        return _dummy(qualname + "()")()

    return _DummyMeta(qualname.rsplit(".", 1)[-1], (object,),
                      {"__init__": __init__, "__call__": __call__,
                       "__qualname__": qualname})


def _offline(*a, **k):
    raise ConnectionError("stubbed `datasets`: the hub is unreachable offline")


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if self.__name__.split(".")[0] == "datasets" and name in ("load_dataset", "load_from_disk"):
            return _offline
        USED.add(f"{self.__name__}.{name}")
        d = _dummy(f"{self.__name__}.{name}")
        setattr(self, name, d)
        return d


REF_SRC = None  # the reference source dir (with a trailing "/"), set by install()


def _imported_by_reference():
    """True when the import statement being executed is in the reference's source.
    Availability probes (e.g. transformers' importlib.util.find_spec checks) thus
    still see these packages as absent, as on a machine without them."""
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if not (fn.startswith("<frozen importlib") or fn == __file__):
            return fn.startswith(REF_SRC)
        f = f.f_back
    return False


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if _is_stubbed(fullname) and _imported_by_reference():
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _StubModule(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def install(ref_src):
    """Serve stubs to imports made by files under `ref_src` (as put on sys.path)."""
    global REF_SRC
    REF_SRC = str(ref_src).rstrip("/") + "/"
    sys.meta_path.insert(0, _Finder())


def hide():
    """After the reference is imported (its modules keep their stub objects), drop
    the stub modules from sys.modules so later availability probes (transformers'
    is_peft_available() etc.) see the packages as not installed."""
    for name in [m for m, mod in sys.modules.items() if isinstance(mod, _StubModule)]:
        del sys.modules[name]
    try:
        from transformers.utils import import_utils
        import_utils._is_package_available.cache_clear()
    except Exception:
        pass
