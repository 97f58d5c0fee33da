"""Restormer building blocks shared by DiffIR's DIRformer and HI-Diff's Transformer.

Channel LayerNorm, MDTA (transposed attention), GDFN (gated depth-wise FFN), the block that chains them,
down/up-sampling.  Module and attribute names follow the official state_dict layouts (``norm1.body.weight``,
``attn.qkv``, ``ffn.project_in`` ...) so official checkpoints load without renaming.  An architecture that
modulates attention or the FFN with its prior subclasses :class:`MDTA` / :class:`GDFN`, adds its parameters and
says how the prior becomes a per-channel scale and shift (:meth:`MDTA.modulation`).

Two formulations of the same function (:mod:`diffir.runtime.execution`): the *reference* one computes as the
official code does (NCHW maps).  The *fast* one keeps maps channels-last and works on their (B, H·W, C) token
view: per-pixel LayerNorm over a contiguous axis, the LayerNorm affine and the prior modulation folded into
the weights of the next 1×1 convolution (once per image, not per pixel), attention from a Gram matrix and
norms, and the attention-weighted values fused with ``project_out`` into one product.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from diffir.runtime.execution import fast_path

LN_EPS = 1e-5
LAYERNORMS = ("BiasFree", "WithBias")

#: ``hook(attn, q, k) -> attention matrix`` replacing :meth:`MDTA.matrix` (tiled inference, see
#: :mod:`diffir.pipelines.attention_stats`); q, k are (B, heads, C/heads, H, W).
StatsHook = Callable[["MDTA", torch.Tensor, torch.Tensor], torch.Tensor]
#: A per-channel scale and shift, (C,) or per image (B, C); None entries mean 1 and 0.
Affine = tuple[torch.Tensor | None, torch.Tensor | None]


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → its (B, H·W, C) token view (a copy only when ``x`` is not channels-last)."""
    b, c, h, w = x.shape
    return x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(b, h * w, c)


def to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H·W, C) tokens → the channels-last (B, C, H, W) map they are (a view)."""
    b, _, c = tokens.shape
    return tokens.view(b, h, w, c).permute(0, 3, 1, 2)


def pointwise(tokens: torch.Tensor, conv: nn.Conv2d | _Pointwise, affine: Affine = (None, None),
              add_bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``conv`` (1×1) applied to ``tokens·scale + shift``, with scale and shift folded into its weights.

    W(x·s + t) + b = (W·diag s)·x + (W·t + b): a per-image weight when s or t differ per image, computed
    once per image instead of a multiply-add per pixel.  With ``add_bias=False`` the folded bias is returned
    instead of added (:func:`depthwise` adds it for free); the result is (output, bias not yet added).
    """
    scale, shift = affine
    weight = conv.weight.flatten(1)  # (out, in)
    bias = conv.bias
    if shift is not None:
        folded = shift @ weight.T
        bias = folded if bias is None else folded + bias
    if scale is not None:
        weight = weight * scale.unsqueeze(-2)
    if weight.dim() == 3 and weight.shape[0] == 1:  # one image: a plain product is the fastest kernel
        weight, bias = weight[0], None if bias is None else bias.view(-1)
    if weight.dim() == 2:
        if add_bias and (bias is None or bias.dim() == 1):
            return F.linear(tokens, weight, bias), None
        out = F.linear(tokens, weight)
    else:
        out = torch.bmm(tokens, weight.expand(tokens.shape[0], -1, -1).transpose(1, 2))
    if bias is None or not add_bias:
        return out, bias
    return out.add_(bias.view(bias.shape[0] if bias.dim() == 2 else 1, 1, -1)), None


def recorded(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an operation on ``tensors`` (training), where in-place writes cost more than they
    save: into a slice, or into a view such as a 3-D ``F.linear`` output, the backward pass copies the whole map."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def add_residual(out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``out + residual``, in place into ``out`` unless autograd records it (see :func:`recorded`)."""
    return out + residual if recorded(out, residual) else out.add_(residual)


def depthwise(x: torch.Tensor, conv: nn.Conv2d | _Pointwise, in_bias: torch.Tensor | None) -> torch.Tensor:
    """The 3×3 depth-wise ``conv`` (zero padding 1) of ``x + in_bias`` without adding ``in_bias`` per pixel.

    A constant c per channel convolves to c·Σtaps inside the image, which goes into the convolution's bias; on
    the one-pixel border the taps that fall on the zero padding are taken back out (rows, columns, and the
    corners counted twice added back).  Saves a full pass over the map: the bias of the preceding product.
    Only without autograd: recorded, each in-place border write makes the backward pass copy the whole gradient
    map (8 copies per call), which made a training step 1.7x slower (benchmarks/train_step.py).
    """
    weight, bias = conv.weight, conv.bias
    if in_bias is not None and recorded(x, in_bias):
        x = x + in_bias.view(-1, weight.shape[0], 1, 1)
        in_bias = None
    if in_bias is None:
        return F.conv2d(x, weight, bias, padding=1, groups=weight.shape[0])
    taps = weight.view(-1, 3, 3)
    channels = taps.shape[0]
    per_image = in_bias.dim() == 2
    constant = in_bias * taps.sum((1, 2))
    if not per_image:
        bias = constant if bias is None else bias + constant
    out = F.conv2d(x, weight, bias, padding=1, groups=channels)
    if per_image:
        out = out + constant.view(-1, channels, 1, 1)
    c = in_bias.view(-1, channels, 1)
    out[:, :, 0, :] -= c * taps[:, 0, :].sum(-1, keepdim=True)
    out[:, :, -1, :] -= c * taps[:, 2, :].sum(-1, keepdim=True)
    out[:, :, :, 0] -= c * taps[:, :, 0].sum(-1, keepdim=True)
    out[:, :, :, -1] -= c * taps[:, :, 2].sum(-1, keepdim=True)
    for row, col in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        out[:, :, row, col] += c[..., 0] * taps[:, 2 * (row < 0), 2 * (col < 0)]
    return out


class _Pointwise:
    """Weight and bias of one half of a convolution, the two attributes :func:`pointwise` and
    :func:`depthwise` read."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias = weight, bias


def compose(first: Affine, then: Affine) -> Affine:
    """The affine map ``then ∘ first`` (apply ``first``, then ``then``) as one scale and shift."""
    s1, t1 = first
    s2, t2 = then
    if s2 is None:
        scale, shift = s1, t1
    else:
        scale = s2 if s1 is None else s1 * s2
        shift = None if t1 is None else t1 * s2
    if t2 is not None:
        shift = t2 if shift is None else shift + t2
    return scale, shift


class _LayerNormBody(nn.Module):
    """Normalisation over one axis: channels of a (B, C, H, W) map (``dim=1``) or the last axis of tokens."""

    def __init__(self, channels: int, with_bias: bool, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=self.dim, keepdim=True, unbiased=False)
        shape = [1] * x.dim()
        shape[self.dim] = -1
        w = self.weight.view(shape)
        if self.bias is None:
            # "BiasFree": divides by the std about the mean but does NOT subtract the mean (official quirk).
            return x / torch.sqrt(var + LN_EPS) * w
        return (x - mean) / torch.sqrt(var + LN_EPS) * w + self.bias.view(shape)


class LayerNorm(nn.Module):
    """Restormer LayerNorm (``WithBias`` or ``BiasFree``) over channels (``dim=1``) or over the last axis."""

    def __init__(self, channels: int, kind: str, dim: int = 1) -> None:
        super().__init__()
        self.body = _LayerNormBody(channels, with_bias=kind != "BiasFree", dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def normalize_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Affine]:
        """(B, N, C) tokens normalised over C *without* the affine, and the affine (weight, bias) to apply."""
        body = self.body
        if body.bias is not None:
            return F.layer_norm(tokens, tokens.shape[-1:], eps=LN_EPS), (body.weight, body.bias)
        # BiasFree: x / std, no centring.  The fused kernel's 1/std is the fastest way to it, but autograd does
        # not differentiate through that output: when training, 1/std comes from an explicit variance.
        if torch.is_grad_enabled() and tokens.requires_grad:
            rstd = torch.rsqrt(torch.var(tokens, dim=-1, keepdim=True, unbiased=False) + LN_EPS)
        else:
            rstd = torch.native_layer_norm(tokens, tokens.shape[-1:], None, None, LN_EPS)[2]
        return tokens * rstd, (body.weight, None)

    def tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The full LayerNorm of (B, N, C) tokens (over C)."""
        normed, (weight, bias) = self.normalize_tokens(tokens)
        return normed * weight if bias is None else torch.addcmul(bias, normed, weight)


class MDTA(nn.Module):
    """Multi-Dconv-head transposed attention: a (C/heads)² channel-attention matrix per head, built from sums
    over *all* pixels, so its cost is linear in the number of pixels.

    ``stats_hook`` (None: the plain computation) replaces :meth:`matrix` during tiled inference so that every
    tile attends with whole-image statistics.
    """

    def __init__(self, channels: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.add_modulation(channels)  # before qkv: the official DiffIR key order puts its kernel there
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=bias)
        self.stats_hook: StatsHook | None = None

    def add_modulation(self, channels: int) -> None:
        """Subclasses whose official layout has modulation weights before ``qkv`` register them here."""

    def modulation(self, prior: torch.Tensor | None) -> Affine:
        """The per-channel (B, C) scale and shift the prior applies to the input (none here)."""
        return None, None

    def matrix(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """softmax(normalize(q)·normalize(k)ᵀ·temperature) over (B, heads, c, H, W) q and k."""
        q = F.normalize(q.flatten(-2), dim=-1)
        k = F.normalize(k.flatten(-2), dim=-1)
        return ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Reference formulation on an NCHW map, modulated by ``prior`` when the subclass defines it."""
        x = modulate(x, self.modulation(prior))
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x))
        # head index is the OUTER factor of the channel axis: (head c) -> head, c
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h, w) for t in qkv.chunk(3, dim=1))
        hook = self.stats_hook
        attn = self.matrix(q, k) if hook is None else hook(self, q, k)
        return self.project_out((attn.to(v.dtype) @ v.flatten(-2)).reshape(b, c, h, w))

    def forward_tokens(self, tokens: torch.Tensor, h: int, w: int, affine: Affine) -> torch.Tensor:
        """Fast formulation: (B, H·W, C) tokens → (B, H·W, C), ``affine`` applied to the input first."""
        b, n, c = tokens.shape
        heads = self.num_heads
        qkv, bias = pointwise(tokens, self.qkv, affine, add_bias=False)
        qkv = to_tokens(depthwise(to_map(qkv, h, w), self.qkv_dwconv, bias))
        q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
        if self.stats_hook is not None:
            def heads_map(t: torch.Tensor) -> torch.Tensor:
                return t.view(b, h, w, heads, c // heads).permute(0, 3, 4, 1, 2)
            attn = self.stats_hook(self, heads_map(q), heads_map(k))
        else:
            # normalize(q)·normalize(k)ᵀ = (q·kᵀ) / (|q|·|k|ᵀ): no normalised copies of q and k.
            gram = q.view(b, n, heads, -1).permute(0, 2, 3, 1) @ k.view(b, n, heads, -1).transpose(1, 2)
            # clamped before the square root (= after, at 1e-12): sqrt's gradient at a zero norm is inf, and a zero
            # q/k row (seen under bf16 autocast) would turn the whole backward pass into NaN
            q_norm = q.square().sum(1).clamp_min(1e-24).sqrt().view(b, heads, -1, 1)
            k_norm = k.square().sum(1).clamp_min(1e-24).sqrt().view(b, heads, 1, -1)
            attn = (gram / (q_norm * k_norm) * self.temperature).softmax(dim=-1)
        # project_out(blockdiag(attn)·v) = v·(W_out·blockdiag(attn))ᵀ: one product over the pixels.
        w_out = self.project_out.weight.view(c, heads, c // heads).transpose(0, 1)  # (heads, C, C/heads)
        attn = attn.to(v.dtype).expand(b, heads, c // heads, c // heads)  # a hook may give one for all images
        mixed = (w_out @ attn).permute(0, 2, 1, 3).reshape(b, c, c)  # (B, C_out, C_in)
        bias = self.project_out.bias
        if bias is None:
            return torch.bmm(v, mixed.transpose(1, 2))
        return torch.baddbmm(bias.view(1, 1, c), v, mixed.transpose(1, 2))


class GDFN(nn.Module):
    """Gated depth-wise feed-forward network with exact-erf GELU; hidden = int(C·expansion), truncated."""

    def __init__(self, channels: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def modulation(self, prior: torch.Tensor | None) -> Affine:
        """The per-channel (B, C) scale and shift the prior applies to the input (none here)."""
        return None, None

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Reference formulation on an NCHW map, modulated by ``prior`` when the subclass defines it."""
        x1, x2 = self.dwconv(self.project_in(modulate(x, self.modulation(prior)))).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)

    def forward_tokens(self, tokens: torch.Tensor, h: int, w: int, affine: Affine) -> torch.Tensor:
        """Fast formulation: (B, H·W, C) tokens → (B, H·W, C), ``affine`` applied to the input first."""
        # The two halves (GELU branch, gate) separately: per-channel convs allow it, and each stays contiguous.
        half = self.project_out.in_channels
        project_in, dwconv = self.project_in, self.dwconv
        halves = []
        for i in range(2):
            part = slice(i * half, (i + 1) * half)
            w_in = _Pointwise(project_in.weight[part], None if project_in.bias is None else project_in.bias[part])
            w_dw = _Pointwise(dwconv.weight[part], None if dwconv.bias is None else dwconv.bias[part])
            x, bias = pointwise(tokens, w_in, affine, add_bias=False)
            halves.append(to_tokens(depthwise(to_map(x, h, w), w_dw, bias)))
        gated = F.gelu(halves[0]).mul_(halves[1])
        return F.linear(gated, self.project_out.weight.flatten(1), self.project_out.bias)


def modulate(x: torch.Tensor, affine: Affine) -> torch.Tensor:
    """x·scale + shift per channel of an NCHW map (reference formulation; no "1 +": the weights learn it)."""
    scale, shift = affine
    b = x.shape[0]
    if scale is not None:
        x = x * scale.view(b, -1, 1, 1)
    if shift is not None:
        x = x + shift.view(b, -1, 1, 1)
    return x


class RestormerBlock(nn.Module):
    """x + attn(norm1 x), then x + ffn(norm2 x); attention and FFN modulated by ``prior`` if they use one."""

    def __init__(self, channels: int, layernorm: str, attn: MDTA, ffn: GDFN) -> None:
        super().__init__()
        self.norm1 = LayerNorm(channels, layernorm)  # registration order = official key order
        self.attn = attn
        self.norm2 = LayerNorm(channels, layernorm)
        self.ffn = ffn

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if not fast_path():
            x = x + self.attn(self.norm1(x), prior)
            return x + self.ffn(self.norm2(x), prior)
        _, _, h, w = x.shape
        tokens = to_tokens(x)
        normed, affine = self.norm1.normalize_tokens(tokens)
        out = self.attn.forward_tokens(normed, h, w, compose(affine, self.attn.modulation(prior)))
        tokens = add_residual(out, tokens)
        normed, affine = self.norm2.normalize_tokens(tokens)
        out = self.ffn.forward_tokens(normed, h, w, compose(affine, self.ffn.modulation(prior)))
        tokens = add_residual(out, tokens)
        return to_map(tokens, h, w)


class Downsample(nn.Module):
    """conv3×3 C → C/2, then PixelUnshuffle(2): 2C channels at half resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """conv3×3 C → 2C, then PixelShuffle(2): C/2 channels at double resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PatchEmbed(nn.Module):
    """3×3 conv stem (``patch_embed.proj``, never biased in the official nets)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():  # the whole body then stays channels-last
            x = x.contiguous(memory_format=torch.channels_last)
        return self.proj(x)
