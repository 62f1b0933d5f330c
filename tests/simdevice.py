"""Simulated CUDA for CPU-only machines: catch CPU/CUDA mixes without a GPU.

    with simulated_cuda() as sim:
        model.to("cuda")                    # parameters and buffers become logical-cuda tensors
        out = library_entry_point(model, ..., device="cuda")
        assert sim.device_of(out).type == "cuda"

Every tensor really lives on the CPU (so values are exactly those of a CPU run), but a
TorchFunctionMode tracks a *logical* device per tensor object:

- a factory call with device="cuda" (torch.zeros, torch.tensor, torch.arange, ...), `.to(cuda)`,
  `.to(cuda_tensor)`, `.cuda()` and `Module.to("cuda")` give cuda-tagged tensors;
- `.cpu()`, `.to("cpu")`, factories without a device, torch.load and anything made outside the
  mode are cpu tensors;
- any other op takes the device of its tensor arguments. If they mix cuda and cpu tensors, the op
  raises DeviceMixError naming it, as PyTorch raises on a GPU. Exactly PyTorch's exemptions are
  allowed: a 0-dim CPU tensor next to CUDA tensors (a "CPU scalar"), CPU index tensors indexing a
  CUDA tensor (`x[idx]`, `x[idx] = v`, index_put), and the cross-device `copy_` (also behind
  `x[1:3] = v`);
- `.numpy()` of a cuda tensor raises (as on a GPU), a generator must be on the op's device type;
- `.device`, `.is_cuda`, `.is_cpu` and `.get_device()` report the logical device, so code such as
  `torch.arange(n, device=x.device)` inside transformers follows the simulated device.
Inside the context torch.cuda.is_available() is True and torch.Generator(device="cuda") returns a
CPU generator whose `.device` says cuda (SimGenerator).

Tags live in the mode: move models inside the context (a model moved in an earlier context is a
CPU model again). Gradients take their tensor's device when read through `.grad`, parameters
made by nn.Parameter(t) take t's.

What it cannot see: kernels (a GPU's float results differ from the CPU's in the last bits), memory,
streams, other torch.cuda calls (device_count, synchronize, ... are not simulated), and code that
reads a tensor's device through a path that bypasses __torch_function__ (C++ internals).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)  # a device without an index means the current one, index 0


class DeviceMixError(RuntimeError):
    """An op that a GPU run would reject: its tensors sit on different devices."""


def logical_device(spec) -> torch.device:
    """torch.device of a device argument ("cuda", 0, torch.device(...)); "cuda" means cuda:0."""
    dev = spec if isinstance(spec, torch.device) else torch.device(spec)
    if dev.type == "cuda" and dev.index is None:
        return CUDA
    return dev


def _is_device_spec(x) -> bool:
    """A positional argument of Tensor.to that names a device (not a dtype, not a tensor)."""
    return isinstance(x, (str, torch.device)) or (isinstance(x, int) and not isinstance(x, bool))


def _real(spec):
    """What is passed to the real (CPU) call in place of a device argument."""
    return "cpu" if logical_device(spec).type == "cuda" else spec


def _tensors(obj, out: list) -> list:
    """Tensors among an op's arguments: directly, in lists/tuples, or as dict values."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _tensors(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            _tensors(x, out)
    return out


def _basic_index(index) -> bool:
    """Ints, slices, None and Ellipsis only (no tensor or list: no advanced indexing)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, slice, type(None), type(Ellipsis))) for p in parts)


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


class SimGenerator(torch.Generator):
    """A CPU generator that reports (and is checked against) a logical device."""

    def __new__(cls, device="cpu"):
        gen = super().__new__(cls, "cpu")
        gen.sim_device = logical_device(device)
        return gen

    def __init__(self, device="cpu"):  # the C base class takes its argument in __new__
        pass

    @property
    def device(self) -> torch.device:
        return self.sim_device


_T = torch.Tensor
# indexing ops: CPU index tensors may index a CUDA tensor (PyTorch moves them), not the reverse
_INDEXING = {_T.__getitem__, _T.__setitem__, _T.index_put, _T.index_put_, torch.index_put, torch.index_put_}
# metadata queries that take tensors of any devices and return no tensor
_AGNOSTIC = {torch._has_compatible_shallow_copy_type, torch.result_type}


class SimulatedCuda(TorchFunctionMode):
    """The mode itself; use `simulated_cuda()`, which also patches torch.cuda and torch.Generator."""

    def __init__(self):
        super().__init__()
        self.tags = WeakIdKeyDictionary()  # tensor -> logical device; absent = cpu
        self.special = {
            _T.to: self._to, _T.cuda: self._cuda, _T.cpu: self._cpu, _T.copy_: self._copy,
            _T.type_as: self._type_as, _T.numpy: self._numpy, _T.get_device: self._get_device,
            _T.device.__get__: lambda f, a, k: self.device_of(a[0]),
            _T.is_cuda.__get__: lambda f, a, k: self.device_of(a[0]).type == "cuda",
            _T.is_cpu.__get__: lambda f, a, k: self.device_of(a[0]).type == "cpu",
            _T.data.__set__: self._set_data, _T.grad.__get__: self._get_grad,
        }

    # ---- tags ----------------------------------------------------------------------------------
    def device_of(self, t: torch.Tensor) -> torch.device:
        return self.tags.get(t, t.device)

    def tag(self, t: torch.Tensor, dev: torch.device) -> torch.Tensor:
        if dev.type == "cpu":
            self.tags.pop(t, None)
        else:
            self.tags[t] = dev
        return t

    # ---- dispatch ------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = self.special.get(func)
        if handler is not None:
            return handler(func, args, kwargs)
        if func in _AGNOSTIC:
            return func(*args, **kwargs)
        return self._generic(func, args, kwargs)

    def _generic(self, func, args, kwargs):
        inputs = _tensors(args, _tensors(kwargs, []))
        if kwargs.get("device") is not None:  # a factory (or *_like / new_*) with an explicit device
            dev = logical_device(kwargs["device"])
            kwargs = {**kwargs, "device": _real(kwargs["device"])}
        elif func in _INDEXING:
            dev = self._indexing_device(func, args, kwargs)
        else:
            dev = self._common_device(func, inputs)
        self._check_generator(func, kwargs.get("generator"), dev)
        out = func(*args, **kwargs)
        self._tag_outputs(func, out, inputs, dev)
        return out

    def _common_device(self, func, tensors) -> torch.device:
        """The one device of the tensor arguments (CPU scalars excepted); DeviceMixError if several."""
        devs = {self.device_of(t) for t in tensors if not (t.dim() == 0 and self.device_of(t).type == "cpu")}
        if not devs and tensors:
            return CPU  # only CPU scalars
        if len(devs) > 1:
            found = ", ".join(sorted(str(d) for d in devs))
            raise DeviceMixError(f"{_name(func)}: expected all tensors on the same device, found {found}")
        return devs.pop() if devs else CPU

    def _indexing_device(self, func, args, kwargs) -> torch.device:
        """self (and a set value) decide; index tensors may be on self's device or on the CPU. A value
        set through basic indexing (ints, slices) is copied with copy_, from any device."""
        index = args[1] if len(args) > 1 else kwargs.get("indices")
        values = args[2] if len(args) > 2 else kwargs.get("values")
        if func is _T.__setitem__ and _basic_index(index):
            values = None
        dev = self._common_device(func, _tensors([args[0], values], []))
        for idx in _tensors(index, []):
            if self.device_of(idx) not in (dev, CPU):
                raise DeviceMixError(f"{_name(func)}: indices on {self.device_of(idx)} index a tensor on {dev}")
        return dev

    def _check_generator(self, func, gen, dev: torch.device) -> None:
        if gen is not None and gen.device.type != dev.type:
            raise DeviceMixError(f"{_name(func)}: expected a {dev.type!r} generator, found {gen.device.type!r}")

    def _tag_outputs(self, func, out, inputs, dev: torch.device) -> None:
        ids = {id(t) for t in inputs}
        for t in _tensors(out, []):
            if id(t) not in ids:
                self.tag(t, dev)
            elif self.device_of(t) != dev:  # in place: a result of `dev` written into another device
                raise DeviceMixError(f"{_name(func)}: writes a {dev} result into a tensor on {self.device_of(t)}")

    # ---- device conversions --------------------------------------------------------------------
    def _moved(self, src: torch.Tensor, result: torch.Tensor, dev: torch.device) -> torch.Tensor:
        """A conversion's result on `dev`: a new tensor when the logical device changes (the real
        call returned `src` itself, since everything is on the CPU)."""
        if result is src and self.device_of(src) != dev:
            result = src.clone()
        return self.tag(result, dev) if result is not src else result

    def _to(self, func, args, kwargs):
        src, rest = args[0], list(args[1:])
        dev = self.device_of(src)
        if rest and isinstance(rest[0], torch.Tensor):  # .to(other): other's device and dtype
            dev = self.device_of(rest[0])
        elif rest and _is_device_spec(rest[0]):
            dev, rest[0] = logical_device(rest[0]), _real(rest[0])
        if kwargs.get("device") is not None:
            dev, kwargs = logical_device(kwargs["device"]), {**kwargs, "device": _real(kwargs["device"])}
        return self._moved(src, func(src, *rest, **kwargs), dev)

    def _cuda(self, func, args, kwargs):
        src = args[0]
        spec = args[1] if len(args) > 1 else kwargs.get("device")
        dev = CUDA if spec is None else logical_device(spec)  # an int is a CUDA index
        fmt = kwargs.get("memory_format", torch.preserve_format)
        if self.device_of(src) == dev:
            return src
        return self.tag(src.clone(memory_format=fmt), dev)

    def _cpu(self, func, args, kwargs):
        src = args[0]
        return self._moved(src, func(*args, **kwargs), CPU)

    def _copy(self, func, args, kwargs):
        """copy_ copies across devices; the destination keeps its device."""
        return func(*args, **kwargs)

    def _type_as(self, func, args, kwargs):
        """type_as(other) converts to other's tensor type, which includes its device."""
        src, other = args[0], args[1]
        return self._moved(src, func(*args, **kwargs), self.device_of(other))

    def _numpy(self, func, args, kwargs):
        if self.device_of(args[0]).type != "cpu":
            raise DeviceMixError(f"can't convert {self.device_of(args[0])} device type tensor to numpy; "
                                 "use Tensor.cpu() first")
        return func(*args, **kwargs)

    def _get_device(self, func, args, kwargs):
        dev = self.device_of(args[0])
        return -1 if dev.type == "cpu" else dev.index

    # ---- parameters and gradients --------------------------------------------------------------
    def _set_data(self, func, args, kwargs):
        """`param.data = t` (how Module.to moves parameters): the parameter takes t's device."""
        func(*args, **kwargs)
        self.tag(args[0], self.device_of(args[1]))

    def _get_grad(self, func, args, kwargs):
        """Autograd puts a gradient on its tensor's device; the engine runs outside the mode."""
        grad = func(*args, **kwargs)
        if grad is not None:
            self.tag(grad, self.device_of(args[0]))
        return grad


@contextlib.contextmanager
def simulated_cuda() -> Iterator[SimulatedCuda]:
    """Enter the mode with torch.cuda.is_available() True and torch.Generator -> SimGenerator."""
    import torch._dynamo  # noqa: F401  (imported lazily by torch.optim; it inspects _make_subclass)

    mode = SimulatedCuda()
    make_subclass = torch.Tensor._make_subclass  # inherited from the C base class

    def tagged_subclass(cls, data, requires_grad=False, **kwargs):  # nn.Parameter(t) keeps t's device
        return mode.tag(make_subclass(cls, data, requires_grad, **kwargs), mode.device_of(data))

    is_available, generator = torch.cuda.is_available, torch.Generator
    torch.cuda.is_available = lambda: True
    torch.Generator = SimGenerator
    torch.Tensor._make_subclass = staticmethod(tagged_subclass)  # shadows the base class's
    try:
        with mode:
            yield mode
    finally:
        torch.cuda.is_available, torch.Generator = is_available, generator
        del torch.Tensor._make_subclass
