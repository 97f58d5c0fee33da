"""Export the whole stage-2 inference of a model to one ONNX graph, and run it with ONNX Runtime.

The graph is ``restore(lq, sample_prior(condition_of(lq), noise))`` of :mod:`diffir.archs.base`: the condition
encoder, the T reverse steps of the prior diffusion unrolled, and the restoration network.  Every random number
the sampler uses is a graph input, so the graph is a deterministic function of its inputs:

==============  =================================  ==========================================================
name            shape                              meaning
==============  =================================  ==========================================================
``lq``          (B, C_in, H, W) float32            degraded image in [0, 1]; H, W multiples of the model's
                                                   size multiple (inpainting: RGB·(1−mask) ⊕ mask, C_in = 4)
``noise``       (B, *prior_shape) float32          x_T, the start of the reverse chain (N(0, I))
``step_noise``  (T, B, *prior_shape) float32       the normal draw of each reverse step t = T−1 … 0, in
                                                   that order; only when the sampler adds it to the state
                                                   (DiffIR's reverse-noise ablation)
``restored``    (B, C_out, H·scale, W·scale)       output (not clamped)
==============  =================================  ==========================================================

B, H and W are dynamic.  The official DiffIR and HI-Diff LDM samplers also draw one normal per reverse step but
never use it; those draws cannot change the result, so the graph has no input for them (the exporter drops
unused inputs).  Drawing ``noise`` then the T step draws with ``torch.randn`` from one CPU generator seeded with
s reproduces ``model(lq, generator=torch.Generator().manual_seed(s))`` (see :func:`draw_noise`);
:class:`OnnxRestorer` does that, and pads / crops like :class:`diffir.Restorer`.

The adaptive average pool of the condition encoders is written as two small averaging matrices built from the
input size at run time (bins ⌊i·L/n⌋ … ⌈(i+1)·L/n⌉, as PyTorch's): the exporter's own translation of an adaptive
pool to more than 1×1 refuses dynamic sizes (it needs the input size to fix a kernel).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffir.errors import DiffIRError
from diffir.install import pip_extra

#: Opset of the exported graph (every operator used exists since opset 13; 17 adds LayerNormalization).
DEFAULT_OPSET = 17
#: Opsets the TorchScript-based exporter writes.
OPSETS = range(13, 21)
OUTPUT_NAME = "restored"
#: Keys of the ONNX metadata (``metadata_props``) the export writes and :class:`OnnxRestorer` reads.
METADATA_KEYS = ("architecture", "task", "scale", "size_multiple", "in_channels", "out_channels", "prior_shape",
                 "noise_draws", "diffir_version")
INSTALL_HINT = f"install the onnx extra: {pip_extra('onnx')}"


def require_onnx() -> None:
    """Raise a one-line :class:`DiffIRError` unless ``onnx`` and ``onnxruntime`` can be imported."""
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise DiffIRError(f"{name} is not installed; {INSTALL_HINT}") from None


def check_opset(opset: int) -> None:
    if opset not in OPSETS:
        raise DiffIRError(f"opset {opset} is not supported: choose {OPSETS.start}..{OPSETS.stop - 1} "
                          f"(default {DEFAULT_OPSET})")


# ------------------------------------------------------------------------------------------------ the graph
def _bin_matrix(length: torch.Tensor | int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, length) matrix whose row i averages positions [⌊i·L/n⌋, ⌈(i+1)·L/n⌉) — AdaptiveAvgPool's bins."""
    pos = torch.arange(length, device=like.device)
    idx = torch.arange(bins, device=like.device).unsqueeze(1)
    start = idx * length // bins
    end = ((idx + 1) * length + bins - 1) // bins
    inside = ((pos >= start) & (pos < end)).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


def adaptive_avg_pool2d(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` in operations that export with dynamic H and W (a mean for 1×1, two
    averaging-matrix products otherwise)."""
    if tuple(size) == (1, 1):
        return x.mean(dim=(-2, -1), keepdim=True)
    rows = _bin_matrix(x.shape[-2], size[0], x)
    cols = _bin_matrix(x.shape[-1], size[1], x)
    return rows @ x @ cols.transpose(0, 1)


class Stage2Graph(nn.Module):
    """``(lq, noise[, step_noise]) → restored``: what is exported (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def condition(self, lq: torch.Tensor) -> torch.Tensor:
        encoder = self.model.condition_encoder()
        if encoder is None:
            return self.model.condition_of(lq)
        pooled = adaptive_avg_pool2d(encoder.features(encoder.prepare(lq)), encoder.pool_size)
        return encoder.head(pooled)

    def forward(self, lq: torch.Tensor, noise: torch.Tensor | None = None,
                step_noise: torch.Tensor | None = None) -> torch.Tensor:
        from diffir.diffusion.sampler import PreDrawnNoise

        draws = [] if noise is None else [noise]
        if step_noise is not None:
            draws.extend(step_noise.unbind(0))
        prior = self.model.sample_prior(self.condition(lq), PreDrawnNoise(draws))
        return self.model.restore(lq, prior)


def noise_draws(model: nn.Module, lq: torch.Tensor) -> int:
    """How many normal tensors ``model.sample_prior`` draws for one call (0 without diffusion, 1 + T or 1)."""
    from diffir.diffusion.sampler import PreDrawnNoise

    feed = PreDrawnNoise(generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.sample_prior(model.condition_of(lq), feed)
    prior_shape = (lq.shape[0], *model.descriptor.prior_shape)
    if any(tuple(t.shape) != prior_shape for t in feed.tensors):
        raise DiffIRError(f"{type(model).__name__} draws noise of another shape than its prior {prior_shape}; "
                          "the ONNX export supports priors sampled from noise of the prior's shape")
    return len(feed.tensors)


def draw_noise(batch: int, prior_shape: Sequence[int], draws: int, seed: int | None = 0) -> dict[str, np.ndarray]:
    """The ``noise`` / ``step_noise`` inputs for ``draws`` draws, as the torch sampler draws them from a CPU
    generator seeded with ``seed`` (``None``: fresh randomness)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    tensors = [torch.randn((batch, *prior_shape), generator=generator, dtype=torch.float32) for _ in range(draws)]
    feeds: dict[str, np.ndarray] = {}
    if tensors:
        feeds["noise"] = tensors[0].numpy()
    if len(tensors) > 1:
        feeds["step_noise"] = torch.stack(tensors[1:]).numpy()
    return feeds


def _default_size(multiple: int) -> tuple[int, int]:
    side = -(-64 // multiple) * multiple
    return side, side


def parse_size(text: str, multiple: int | None = None) -> tuple[int, int]:
    """``"HxW"`` (or one number for a square) → (H, W), checked against the size multiple if given."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        size = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else None
    except ValueError:
        size = None
    if size is None or min(size) < 1:
        raise DiffIRError(f"bad size {text!r}: give HxW, e.g. 64x64")
    if multiple and (size[0] % multiple or size[1] % multiple):
        raise DiffIRError(f"size {size[0]}x{size[1]} is not a multiple of the model's size multiple {multiple}")
    return size


def export_onnx(
    model: nn.Module | str | os.PathLike,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    sample_size: tuple[int, int] | None = None,
    check: bool = True,
) -> Path:
    """Write the stage-2 inference of ``model`` (a module, checkpoint path or model name) to ``path`` as ONNX.

    Args:
        opset: ONNX opset version of the graph.
        sample_size: (H, W) of the LQ image the graph is traced with (default 64×64, rounded up to the size
            multiple); the graph accepts any multiple of the size multiple.
        check: run the written graph with ONNX Runtime at another size than the traced one and compare it with
            the torch model (a :class:`DiffIRError` if they differ by more than float rounding).

    The file is written to a temporary name next to ``path`` and renamed when complete.
    """
    from diffir import __version__
    from diffir.errors import describe_os_error
    from diffir.io.atomic import atomic_path
    from diffir.io.checkpoint import check_output_path
    from diffir.pipelines.model_source import load_inference_model
    from diffir.runtime import reference_path

    check_opset(opset)
    path = check_output_path(path)  # before the slow load and trace
    require_onnx()
    import onnx

    model = load_inference_model(model)
    weights = next(model.parameters())
    if weights.dtype != torch.float32 or weights.device.type != "cpu":  # export a float32 CPU copy
        model = copy.deepcopy(model).to("cpu", torch.float32)
    d = model.descriptor
    height, width = sample_size or _default_size(d.size_multiple)
    if height % d.size_multiple or width % d.size_multiple:
        raise DiffIRError(f"trace size {height}x{width} is not a multiple of the model's size multiple "
                          f"{d.size_multiple}")
    lq = torch.rand(1, d.in_channels, height, width, generator=torch.Generator().manual_seed(0))
    draws = noise_draws(model, lq)
    feeds = {k: torch.from_numpy(v) for k, v in draw_noise(1, d.prior_shape, draws).items()}
    names = ["lq", *feeds]
    dynamic_axes: dict[str, dict[int, str]] = {
        "lq": {0: "batch", 2: "height", 3: "width"},
        "noise": {0: "batch"},
        "step_noise": {1: "batch"},
        OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"},
    }
    graph = Stage2Graph(model).eval()
    # The TorchScript-based exporter (dynamo=False, deprecated since torch 2.9 but still shipped): it traces the
    # unrolled sampler and the network as they run, needs no package beyond onnx, and honours dynamic batch/H/W
    # through ``dynamic_axes``; ~2.5 s for a tiny model.  The torch.export-based one (dynamo=True) also works
    # offline but needs onnxscript and shape constraints (H = 8·h ...), and took 77 s on the same tiny model.
    # The plain (reference) formulation is traced: the fast path's channels-last token layout is not part of what
    # an ONNX runtime sees.
    meta = {
        "architecture": d.architecture, "task": d.task, "scale": d.scale, "size_multiple": d.size_multiple,
        "in_channels": d.in_channels, "out_channels": d.out_channels,
        "prior_shape": ",".join(map(str, d.prior_shape)), "noise_draws": draws, "diffir_version": __version__,
    }
    try:
        with atomic_path(path) as tmp, reference_path(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)  # the legacy exporter announces itself
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # shape arithmetic is recorded
            torch.onnx.export(
                graph, (lq, *feeds.values()), str(tmp), dynamo=False, opset_version=opset,
                input_names=names, output_names=[OUTPUT_NAME],
                dynamic_axes={k: v for k, v in dynamic_axes.items() if k in (*names, OUTPUT_NAME)},
            )
            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, {k: str(v) for k, v in meta.items()})
            onnx.save(proto, str(tmp))
            if check:
                check_export(model, tmp, (height + d.size_multiple, width + 2 * d.size_multiple))
    except OSError as exc:  # full disk, permissions ...: named after the output, not its temporary file
        raise DiffIRError(describe_os_error(exc, path)) from None
    return Path(path)


def check_export(model: nn.Module, onnx_path: str | os.PathLike, size: tuple[int, int], tol: float = 1e-3) -> float:
    """Max |ONNX − torch| on a random image of ``size``, same noise; :class:`DiffIRError` above ``tol`` (relative
    to the output's magnitude)."""
    from diffir.diffusion.sampler import PreDrawnNoise
    from diffir.runtime import reference_path

    runner = OnnxRestorer(onnx_path)
    d = model.descriptor
    lq = torch.rand(1, d.in_channels, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), reference_path():
        feed = PreDrawnNoise(generator=torch.Generator().manual_seed(1))
        want = model.restore(lq, model.sample_prior(model.condition_of(lq), feed)).numpy()
    got = runner.run_graph(lq.numpy(), runner.noise(1, seed=1))
    diff = float(np.abs(got - want).max())
    if not diff <= tol * max(1.0, float(np.abs(want).max())):
        raise DiffIRError(f"the exported graph differs from the torch model by {diff:.3g} at {size[0]}x{size[1]} "
                          "(please report this model and opset)")
    return diff


def describe_graph(path: str | os.PathLike) -> str:
    """``"lq (batch, 3, height, width), noise (batch, 256) -> restored (batch, 3, out_height, out_width)"``."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def signature(values: Any) -> str:
        return ", ".join(
            f"{v.name} (" + ", ".join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim) + ")"
            for v in values
        )

    return f"{signature(graph.input)} -> {signature(graph.output)}"


# ------------------------------------------------------------------------------------------------ running
class OnnxRestorer:
    """Run an exported graph with ONNX Runtime on float images in [0, 1].

        >>> r = OnnxRestorer("sr_x4.onnx")
        >>> out = r.run(lq, seed=0)          # lq (C, H, W) or (B, C, H, W) float array, any H and W

    ``run`` reflect-pads to the size multiple and crops back like :class:`diffir.Restorer`, and draws the noise
    from a CPU generator seeded with ``seed`` exactly as the torch sampler does, so with the same weights and
    seed the result equals the torch model's to float rounding.  Inpainting graphs take the 4-channel
    ``[RGB·(1−mask), mask]`` input (mask 1 = hole).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            raise DiffIRError(f"{path}: not a graph written by `diffir export onnx` (no {missing[0]} metadata)")
        self.metadata: dict[str, Any] = dict(meta)
        self.scale = int(meta["scale"])
        self.size_multiple = int(meta["size_multiple"])
        self.in_channels = int(meta["in_channels"])
        self.prior_shape = tuple(int(v) for v in meta["prior_shape"].split(",") if v)
        self.noise_draws = int(meta["noise_draws"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def noise(self, batch: int = 1, seed: int | None = 0) -> dict[str, np.ndarray]:
        """The noise inputs for ``batch`` images, as ``torch.Generator().manual_seed(seed)`` draws them."""
        feeds = draw_noise(batch, self.prior_shape, self.noise_draws, seed)
        return {k: v for k, v in feeds.items() if k in self.input_names}

    def run_graph(self, lq: np.ndarray, noise: dict[str, np.ndarray]) -> np.ndarray:
        """The graph on an LQ batch whose H and W are already multiples of the size multiple."""
        feeds = {"lq": np.ascontiguousarray(lq, dtype=np.float32), **noise}
        return self.session.run([OUTPUT_NAME], feeds)[0]

    def run(self, lq: np.ndarray, seed: int | None = 0, noise: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Restore a (C, H, W) or (B, C, H, W) float image (any H, W); ``noise`` (from :meth:`noise`) overrides
        ``seed``.  Returns float32 of the same rank, H·scale × W·scale, not clamped."""
        from diffir.nn.padding import crop_to, pad_to_multiple

        x = torch.as_tensor(np.asarray(lq, dtype=np.float32))
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise DiffIRError(f"expected a (C, H, W) or (B, C, H, W) image with C = {self.in_channels}, "
                              f"got shape {tuple(np.shape(lq))}")
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple).numpy()
        out = self.run_graph(padded, noise if noise is not None else self.noise(x.shape[0], seed))
        out = crop_to(torch.from_numpy(out), height * self.scale, width * self.scale).numpy()
        return out[0] if single else out
