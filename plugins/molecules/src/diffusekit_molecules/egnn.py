"""E(3)-equivariant denoisers for fully connected, padded molecules: EGNN and an EQGAT-style network.

Both modules share one call::

    pos_out, h_out, edge_out = module(pos, h, node_mask, edge_attr=None)

=============  ===================  ==========================================================
argument       shape                meaning
=============  ===================  ==========================================================
``pos``        ``(B, N, 3)``        atom coordinates (any centre; only differences are used)
``h``          ``(B, N, F_in)``     invariant atom features. **The caller concatenates the
                                    noise level / time embedding (and any other per-atom
                                    conditioning) into** ``h``; the networks see no time.
``node_mask``  ``(B, N)`` bool      ``True`` for real atoms, ``False`` for padding rows
``edge_attr``  ``(B, N, N, E_in)``  invariant edge (bond) features, or ``None`` when
                                    ``edge_in_features == 0``; diagonal entries are ignored
=============  ===================  ==========================================================

and returns

* ``pos_out`` ``(B, N, 3)``: one E(3)-equivariant vector per atom (for instance the predicted
  noise or velocity of the positions). It is invariant to translations of ``pos``, rotates
  (and reflects) with it, has zero mean over the real atoms of each molecule (the masked
  centre of mass is subtracted) and is exactly 0 on padding rows;
* ``h_out`` ``(B, N, F_out)``: invariant atom outputs, exactly 0 on padding rows;
* ``edge_out`` ``(B, N, N, E_out)`` or ``None`` (when ``edge_out_features == 0``): invariant,
  symmetric in its two atom axes, exactly 0 unless ``i != j`` are both real atoms.

Edges join every ordered pair ``i != j`` of real atoms. Padding never reaches real atoms: the
inputs of padding rows (and of non-edges) are replaced by zeros with :func:`torch.where` at the
start (so even NaN there is harmless), every message is multiplied by the 0/1 edge mask and
every atom state by the 0/1 atom mask; attention is normalised by a masked softmax that never
uses ``-inf``, so a one-atom molecule (no edges) or an all-padding row stays finite.

Both networks are permutation equivariant in the atom axis (and the two atom axes of the edge
tensor) and work in float32 and float64: modules are built in float32, call ``.double()``
for float64.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as fn
from attrs import validators as v
from diffusekit import ShapeError
from torch import Tensor, nn

__all__ = [
    "EGNN",
    "EQGAT",
    "EGNNConfig",
    "EQGATConfig",
    "EQGATLayer",
    "EquivariantBlock",
    "GCL",
    "PairLinear",
    "SinusoidalDistance",
    "edge_mask_of",
    "remove_masked_mean",
]


# ---------------------------------------------------------------------------------------------
# shared helpers


def edge_mask_of(node_mask: Tensor) -> Tensor:
    """The ``(B, N, N)`` bool mask of edges: ``i != j`` and both atoms real."""
    n = node_mask.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=node_mask.device)
    return node_mask[:, :, None] & node_mask[:, None, :] & ~eye


def remove_masked_mean(x: Tensor, node_mask: Tensor) -> Tensor:
    """``x - mean over the real atoms of x``, then exactly 0 on padding rows (``x``: ``(B, N, D)``)."""
    m = node_mask[..., None].to(x.dtype)
    count = m.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(dim=1, keepdim=True) / count
    return (x - mean) * m


def _masked_atom_mean(x: Tensor, m: Tensor) -> Tensor:
    """Mean over the real atoms of each molecule of ``x`` ``(B, N, ...)``; ``m`` is ``(B, N)`` float."""
    mm = m.reshape(m.shape + (1,) * (x.ndim - 2))
    count = m.sum(dim=1).clamp(min=1.0).reshape((m.shape[0],) + (1,) * (x.ndim - 1))
    return (x * mm).sum(dim=1, keepdim=True) / count


class PairLinear(nn.Linear):
    """The linear map of ``concat(a_i, b_j, e_ij)`` over all pairs, computed without the concatenation.

    ``W [a_i; b_j; e_ij] + c = W_1 a_i + W_2 b_j + W_3 e_ij + c``: the node terms cost
    ``O(N)`` products instead of ``O(N^2)``. Parameters (and their initialisation) are those of
    ``nn.Linear(2 * node_features + edge_features, out_features)``.
    """

    def __init__(self, node_features: int, edge_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(2 * node_features + edge_features, out_features, bias=bias)
        self.node_features = node_features
        self.edge_features = edge_features

    def forward(self, a: Tensor, b: Tensor, e: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """``a``, ``b``: ``(B, N, F)`` (receiver ``i``, sender ``j``); ``e``: ``(B, N, N, E)``. Returns ``(B, N, N, out)``."""
        f = self.node_features
        out = fn.linear(a, self.weight[:, :f], self.bias)[:, :, None] + fn.linear(b, self.weight[:, f : 2 * f])[:, None]
        if self.edge_features:
            if e is None:
                raise ShapeError("PairLinear has edge inputs but got no edge features")
            out = out + fn.linear(e, self.weight[:, 2 * f :])
        return out


class SinusoidalDistance(nn.Module):
    """Sines and cosines of the distance ``d = sqrt(d^2 + 1e-8)`` at geometric frequencies (EDM, Hoogeboom et al. 2022).

    Frequencies ``2 pi div^k / max_res`` for ``k = 0 .. floor(log_div(max_res / min_res))``;
    with the defaults (15 Å, 15/2000 Å, 4) that is 6 frequencies, 12 features. Takes squared
    distances ``(..., 1)``.
    """

    def __init__(self, max_res: float = 15.0, min_res: float = 15.0 / 2000.0, div_factor: float = 4.0) -> None:
        super().__init__()
        n = int(math.log(max_res / min_res, div_factor)) + 1
        freqs = 2.0 * math.pi * div_factor ** torch.arange(n, dtype=torch.float64) / max_res
        self.register_buffer("freqs", freqs.to(torch.get_default_dtype()), persistent=False)
        self.dim = 2 * n

    def forward(self, sq_dist: Tensor) -> Tensor:
        angles = torch.sqrt(sq_dist + 1e-8) * self.freqs.to(sq_dist.dtype)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def _check_inputs(
    module: nn.Module, pos: Tensor, h: Tensor, node_mask: Tensor, edge_attr: Tensor | None, f_in: int, e_in: int
) -> None:
    name = type(module).__name__
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ShapeError(f"{name}: pos must be (B, N, 3), got {tuple(pos.shape)}")
    b, n = pos.shape[:2]
    if h.shape != (b, n, f_in):
        raise ShapeError(f"{name}: h must be (B, N, {f_in}) = {(b, n, f_in)}, got {tuple(h.shape)}")
    if node_mask.shape != (b, n) or node_mask.dtype != torch.bool:
        raise ShapeError(
            f"{name}: node_mask must be a bool (B, N) = {(b, n)} tensor, got {node_mask.dtype} {tuple(node_mask.shape)}"
        )
    if e_in == 0 and edge_attr is not None:
        raise ShapeError(f"{name}: built with edge_in_features = 0 but got edge_attr")
    if e_in and (edge_attr is None or edge_attr.shape != (b, n, n, e_in)):
        got = None if edge_attr is None else tuple(edge_attr.shape)
        raise ShapeError(f"{name}: edge_attr must be (B, N, N, {e_in}) = {(b, n, n, e_in)}, got {got}")


def _sanitise(
    pos: Tensor, h: Tensor, node_mask: Tensor, edge_attr: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Zero padding rows and non-edges (``torch.where``: also clears NaN/inf there); returns the edge mask too."""
    emask = edge_mask_of(node_mask)
    nm = node_mask[..., None]
    pos = torch.where(nm, pos, torch.zeros((), dtype=pos.dtype, device=pos.device))
    h = torch.where(nm, h, torch.zeros((), dtype=h.dtype, device=h.device))
    if edge_attr is not None:
        edge_attr = torch.where(
            emask[..., None], edge_attr, torch.zeros((), dtype=edge_attr.dtype, device=edge_attr.device)
        )
    return pos, h, emask, edge_attr


class _EdgeHead(nn.Module):
    """Symmetric invariant edge output from final atom features (and edge features / squared distance).

    ``y_ij = W_2 silu(W_1 [s_i + s_j, s_i * s_j, e_ij, |x_i - x_j|^2] + c_1) + c_2``, symmetric because
    its inputs are (``e`` is symmetrised first), then masked to the edges.
    """

    def __init__(self, node_features: int, edge_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.edge_features = edge_features
        self.lin1 = nn.Linear(2 * node_features + edge_features + 1, hidden)
        self.lin2 = nn.Linear(hidden, out_features)

    def forward(self, s: Tensor, e: Tensor | None, sq_dist: Tensor, emask_f: Tensor) -> Tensor:
        si, sj = s[:, :, None], s[:, None]
        parts = [si + sj, si * sj]
        if self.edge_features:
            assert e is not None
            parts.append(0.5 * (e + e.transpose(1, 2)))
        parts.append(sq_dist)
        n = s.shape[1]
        parts = [p.expand(-1, n, n, -1) for p in parts]
        return self.lin2(fn.silu(self.lin1(torch.cat(parts, dim=-1)))) * emask_f


# ---------------------------------------------------------------------------------------------
# EGNN (Satorras et al. 2021) in the form of EDM (Hoogeboom et al. 2022)


class GCL(nn.Module):
    """One invariant graph convolution sub-layer (the ``GCL`` of EDM).

    .. math::
        m_{ij} = \\phi_e(h_i, h_j, a_{ij}),\\quad
        \\tilde m_{ij} = m_{ij}\\,\\sigma(w^\\top m_{ij} + b)\\ \\text{(attention)},\\quad
        h_i \\leftarrow h_i + \\phi_h\\Big(h_i, \\tfrac{1}{Z} \\textstyle\\sum_{j \\ne i} \\tilde m_{ij}\\Big)

    with ``phi_e`` a two-layer SiLU MLP (SiLU on its output too), ``phi_h`` a two-layer MLP,
    ``a_ij`` the block's edge features and ``Z`` the constant ``normalization_factor``.
    """

    def __init__(self, hidden: int, edge_features: int, attention: bool, normalization_factor: float) -> None:
        super().__init__()
        self.normalization_factor = normalization_factor
        self.edge_in = PairLinear(hidden, edge_features, hidden)
        self.edge_out = nn.Linear(hidden, hidden)
        self.att = nn.Linear(hidden, 1) if attention else None
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, edge_feat: Tensor, emask_f: Tensor, nmask_f: Tensor) -> Tensor:
        m = fn.silu(self.edge_out(fn.silu(self.edge_in(h, h, edge_feat))))
        if self.att is not None:
            m = m * torch.sigmoid(self.att(m))
        agg = (m * emask_f).sum(dim=2) / self.normalization_factor
        return (h + self.node_mlp(torch.cat([h, agg], dim=-1))) * nmask_f


class EquivariantBlock(nn.Module):
    """An EDM equivariant block: ``sublayers`` :class:`GCL` s, then one coordinate update.

    Edge features ``a_ij = [f(|x_i - x_j|^2), f(|x_i^0 - x_j^0|^2), e_ij]``: the squared distance at
    the block input and at the network input (raw, or through :class:`SinusoidalDistance`),
    and the external edge features if any. The coordinate update (EGNN eq. 4, EDM form) is

    .. math::
        x_i \\leftarrow x_i + \\frac{1}{Z}\\sum_{j \\ne i}
        \\frac{x_i - x_j}{\\sqrt{\\lVert x_i - x_j \\rVert^2 + 10^{-8}} + C}\\;
        r\\,\\tanh \\phi_x(h_i, h_j, a_{ij})

    with ``C = norm_constant``, ``r = coords_range`` (``tanh`` bounds each step) and ``phi_x``
    a SiLU MLP whose last (bias-free) layer starts near zero (Xavier gain 0.001, as in EDM).
    """

    def __init__(
        self,
        hidden: int,
        edge_features: int,
        sublayers: int,
        attention: bool,
        normalization_factor: float,
        norm_constant: float,
        coords_range: float,
        tanh: bool,
        sin_embedding: SinusoidalDistance | None,
    ) -> None:
        super().__init__()
        self.normalization_factor = normalization_factor
        self.norm_constant = norm_constant
        self.coords_range = coords_range
        self.tanh = tanh
        self.sin_embedding = sin_embedding
        self.gcls = nn.ModuleList(GCL(hidden, edge_features, attention, normalization_factor) for _ in range(sublayers))
        self.coord_in = PairLinear(hidden, edge_features, hidden)
        self.coord_mid = nn.Linear(hidden, hidden)
        self.coord_out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.coord_out.weight, gain=0.001)

    def forward(
        self, h: Tensor, x: Tensor, dist0_feat: Tensor, edge_attr: Tensor | None, emask_f: Tensor, nmask_f: Tensor
    ) -> tuple[Tensor, Tensor]:
        diff = x[:, :, None] - x[:, None]  # x_i - x_j
        sq = (diff * diff).sum(-1, keepdim=True)
        diff = diff / (torch.sqrt(sq + 1e-8) + self.norm_constant)
        dfeat = self.sin_embedding(sq) if self.sin_embedding is not None else sq
        feats = [dfeat, dist0_feat] + ([edge_attr] if edge_attr is not None else [])
        edge_feat = torch.cat(feats, dim=-1)
        for gcl in self.gcls:
            h = gcl(h, edge_feat, emask_f, nmask_f)
        w = self.coord_out(fn.silu(self.coord_mid(fn.silu(self.coord_in(h, h, edge_feat)))))
        w = torch.tanh(w) * self.coords_range if self.tanh else w
        x = x + (diff * w * emask_f).sum(dim=2) / self.normalization_factor
        return h * nmask_f, x * nmask_f


class EGNN(nn.Module):
    """E(n)-equivariant graph network (Satorras, Hoogeboom & Welling 2021) as used by EDM (Hoogeboom et al. 2022).

    ``h^0 = W_in h + b``; ``layers`` :class:`EquivariantBlock` s update ``(h, x)``; then
    ``h_out = W_out h^L + b`` and ``pos_out = x^L - x^0`` with the masked centre of mass
    removed (EDM's ``vel``). Built from an :class:`EGNNConfig`.
    """

    def __init__(self, config: EGNNConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.sin_embedding = SinusoidalDistance() if c.sin_embedding else None
        dist_dim = self.sin_embedding.dim if self.sin_embedding is not None else 1
        edge_features = 2 * dist_dim + c.edge_in_features
        self.embedding = nn.Linear(c.in_features, c.width)
        self.blocks = nn.ModuleList(
            EquivariantBlock(
                c.width,
                edge_features,
                c.sublayers,
                c.attention,
                c.normalization_factor,
                c.norm_constant,
                c.coords_range,
                c.tanh,
                self.sin_embedding,
            )
            for _ in range(c.layers)
        )
        self.embedding_out = nn.Linear(c.width, c.out_features)
        self.edge_head = (
            _EdgeHead(c.width, c.edge_in_features, c.width, c.edge_out_features) if c.edge_out_features else None
        )

    def forward(
        self, pos: Tensor, h: Tensor, node_mask: Tensor, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """See the module docstring for shapes; ``h`` already carries the time / noise-level features."""
        c = self.config
        _check_inputs(self, pos, h, node_mask, edge_attr, c.in_features, c.edge_in_features)
        pos, h, emask, edge_attr = _sanitise(pos, h, node_mask, edge_attr)
        nmask_f = node_mask[..., None].to(pos.dtype)
        emask_f = emask[..., None].to(pos.dtype)
        x0 = remove_masked_mean(pos, node_mask)  # only differences matter; centring keeps float32 small
        diff0 = x0[:, :, None] - x0[:, None]
        sq0 = (diff0 * diff0).sum(-1, keepdim=True)
        dist0_feat = self.sin_embedding(sq0) if self.sin_embedding is not None else sq0
        s = self.embedding(h) * nmask_f
        x = x0
        for block in self.blocks:
            s, x = block(s, x, dist0_feat, edge_attr, emask_f, nmask_f)
        h_out = self.embedding_out(s) * nmask_f
        pos_out = remove_masked_mean(x - x0, node_mask)
        edge_out = None
        if self.edge_head is not None:
            d = x[:, :, None] - x[:, None]
            edge_out = self.edge_head(s, edge_attr, (d * d).sum(-1, keepdim=True), emask_f)
        return pos_out, h_out, edge_out


@attrs.frozen(kw_only=True)
class EGNNConfig:
    """Hyper-parameters of an :class:`EGNN`; :meth:`build` makes a fresh module (global torch RNG).

    Defaults follow EDM's QM9 model (256 wide, 9 blocks of 1 sub-layer, attention, tanh with
    range 15, ``norm_constant`` 1, sum aggregation divided by ``normalization_factor`` 1, raw
    squared distances). ``in_features`` counts the time / noise-level features that the caller
    concatenates into ``h``. ``edge_in_features`` external edge features are appended to every
    block's edge features; ``edge_out_features > 0`` adds a symmetric edge head (not in EDM).
    """

    in_features: int = attrs.field(validator=v.ge(1))
    out_features: int = attrs.field(validator=v.ge(1))
    edge_in_features: int = attrs.field(default=0, validator=v.ge(0))
    edge_out_features: int = attrs.field(default=0, validator=v.ge(0))
    width: int = attrs.field(default=256, validator=v.ge(1))
    layers: int = attrs.field(default=9, validator=v.ge(1))
    sublayers: int = attrs.field(default=1, validator=v.ge(1))
    attention: bool = True
    tanh: bool = True
    coords_range: float = attrs.field(default=15.0, validator=v.gt(0.0))
    norm_constant: float = attrs.field(default=1.0, validator=v.ge(0.0))
    normalization_factor: float = attrs.field(default=1.0, validator=v.gt(0.0))
    sin_embedding: bool = False

    def build(self) -> EGNN:
        return EGNN(self)


# ---------------------------------------------------------------------------------------------
# EQGAT-diff style network (Le et al. 2024)


class _GraphNorm(nn.Module):
    """EQGAT's per-molecule layer norm of scalars ``s`` ``(B, N, S)`` and vectors ``v`` ``(B, N, 3, V)``.

    ``s <- w (s - mu) / sqrt(max(var, eps)) + b`` with mean and variance over the real atoms
    and channels of each molecule; ``v <- v / sqrt(max(mean |v_c|^2, eps))`` (mean over real
    atoms and vector channels). EQGAT divides by the variance itself; we take the square root.
    """

    def __init__(self, sdim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(sdim))
        self.bias = nn.Parameter(torch.zeros(sdim))

    def forward(self, s: Tensor, v: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        mu = _masked_atom_mean(s.mean(-1, keepdim=True), m)
        s = s - mu
        var = _masked_atom_mean((s * s).mean(-1, keepdim=True), m)
        s = s / torch.sqrt(var.clamp(min=self.eps)) * self.weight + self.bias
        vn = _masked_atom_mean((v * v).sum(2).mean(-1, keepdim=True), m)  # (B, 1, 1)
        v = v / torch.sqrt(vn.clamp(min=self.eps))[..., None]
        mf = m[..., None]
        return s * mf, v * mf[..., None]


def _geometry(p: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EQGAT edge geometry of centred positions ``p``: ``(d_ij, a_ij, r_ij / (1 + d_ij), |p_i|)``.

    ``r_ij = p_i - p_j``, ``d_ij = sqrt(max(|r_ij|^2, 1e-6))``, ``a_ij = p_i . p_j``.
    """
    r = p[:, :, None] - p[:, None]
    d = torch.sqrt((r * r).sum(-1, keepdim=True).clamp(min=1e-6))
    a = torch.einsum("bix,bjx->bij", p, p)[..., None]
    norm = torch.sqrt((p * p).sum(-1, keepdim=True).clamp(min=1e-6))
    return d, a, r / (1.0 + d), norm


def _masked_softmax(logits: Tensor, emask: Tensor) -> Tensor:
    """Softmax over senders ``j`` (dim 2) restricted to edges, per channel; 0 where a receiver has no edge.

    No ``-inf``: the shift is the (detached) largest logit over edges (0 without edges),
    non-edges are replaced by 0 before ``exp`` and then multiplied by 0.
    """
    em = emask[..., None]
    lowest = torch.finfo(logits.dtype).min
    shift = torch.where(em, logits, torch.full((), lowest, dtype=logits.dtype, device=logits.device)).amax(
        2, keepdim=True
    )
    shift = torch.where(em.any(2, keepdim=True), shift, torch.zeros_like(shift)).detach()
    z = torch.where(em, logits - shift, torch.zeros_like(logits))
    w = torch.exp(z) * em.to(logits.dtype)
    return w / w.sum(2, keepdim=True).clamp(min=1.0)


class EQGATLayer(nn.Module):
    """One EQGAT-diff layer (``EQGATGlobalEdgeConvFinal`` of Le et al.) on dense, masked tensors.

    With ``u_ij = [s_i, s_j, d_ij, a_ij, e'_ij, |p_i|, |p_j|]`` and ``e' = W_pre e``,
    ``phi(u_ij) = (alpha_ij, c_ij, c'_ij, m^e_ij, g_ij)`` (two-layer SiLU MLP), the updates are

    .. math::
        s_i &\\leftarrow s_i + \\textstyle\\sum_j \\mathrm{softmax}_j(\\alpha_{ij}) \\odot W_s s_j \\\\
        v_i &\\leftarrow v_i + \\tfrac{1}{n_i}\\textstyle\\sum_j \\big(\\hat r_{ij} \\otimes c_{ij}
               + c'_{ij} \\odot W_v v_j\\big) \\\\
        p_i &\\leftarrow p_i + \\mathrm{SE3Norm}\\big(\\tfrac{1}{n_i}\\textstyle\\sum_j g_{ij} \\hat r_{ij}\\big) \\\\
        e_{ij} &\\leftarrow W_{post}\\,\\mathrm{silu}(m^e_{ij} + e'_{ij})

    (``hat r_ij = (p_i - p_j) / (1 + d_ij)``, ``n_i`` the number of neighbours, softmax per
    channel, ``SE3Norm(y) = w y / (mean_i |y_i| + 1e-5)``), then a gated equivariant update
    ``(s, v) += GatedEquiv(s, v)``: ``[vdot; v'] = W_0 v``, ``[g; s'] = MLP([s, |vdot|^2])``,
    ``v' <- W_1 (g * v')``. The first layer has no vector input (no ``c'`` term); the last
    uses a single linear map in the gated update (as EQGAT).
    """

    def __init__(self, sdim: int, vdim: int, edim: int, has_v_in: bool, use_mlp_update: bool) -> None:
        super().__init__()
        self.sdim, self.vdim, self.edim = sdim, vdim, edim
        self.has_v_in = has_v_in
        self.v_mul = 2 if has_v_in else 1
        self.edge_pre = nn.Linear(edim, edim)
        self.edge_net_in = PairLinear(sdim, edim + 4, sdim)
        self.edge_net_out = nn.Linear(sdim, self.v_mul * vdim + sdim + 1 + edim)
        self.edge_post = nn.Linear(edim, edim)
        self.scalar_net = nn.Linear(sdim, sdim)
        self.vector_net = nn.Linear(vdim, vdim, bias=False) if has_v_in else None
        self.se3norm_weight = nn.Parameter(torch.ones(()))
        # gated equivariant update
        self.wv0 = nn.Linear(vdim, 2 * vdim, bias=False)
        if use_mlp_update:
            self.ws = nn.Sequential(nn.Linear(sdim + vdim, sdim), nn.SiLU(), nn.Linear(sdim, vdim + sdim))
            self.wv1 = nn.Linear(vdim, vdim, bias=False)
        else:
            self.ws = nn.Linear(sdim + vdim, vdim + sdim)
            self.wv1 = None

    def forward(
        self, s: Tensor, v: Tensor, p: Tensor, e: Tensor, emask: Tensor, m: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        emask_f = emask[..., None].to(s.dtype)
        count = emask_f.sum(2).clamp(min=1.0)  # (B, N, 1) neighbours
        d, a, rhat, pnorm = _geometry(p)
        e = self.edge_pre(e)
        n = s.shape[1]
        geo = torch.cat([d, a, e, pnorm[:, :, None].expand(-1, -1, n, -1), pnorm[:, None].expand(-1, n, -1, -1)], -1)
        out = self.edge_net_out(fn.silu(self.edge_net_in(s, s, geo)))
        alpha, coef, me, g = out.split([self.sdim, self.v_mul * self.vdim, self.edim, 1], dim=-1)
        # scalar messages: per-channel attention over neighbours
        ms = (_masked_softmax(alpha, emask) * self.scalar_net(s)[:, None]).sum(2)
        # vector messages (mean over neighbours)
        c = coef * emask_f
        mv = torch.einsum("bijx,bijc->bixc", rhat, c[..., : self.vdim])
        if self.vector_net is not None:
            mv = mv + torch.einsum("bijc,bjxc->bixc", c[..., self.vdim :], self.vector_net(v))
        mv = mv / count[..., None]
        # position messages, SE(3)-normalised
        mp = (g * emask_f * rhat).sum(2) / count
        mp_norm = torch.sqrt((mp * mp).sum(-1, keepdim=True).clamp(min=1e-12))
        mp = self.se3norm_weight * mp / (_masked_atom_mean(mp_norm, m) + 1e-5)
        mf = m[..., None]
        s = s + ms
        v = v + mv
        p = remove_masked_mean(p + mp, m.bool())
        e = self.edge_post(fn.silu(me + e)) * emask_f
        # gated equivariant update
        vv = self.wv0(v)
        vdot, vg = vv.split([self.vdim, self.vdim], dim=-1)
        vdot = (vdot * vdot).sum(2).clamp(min=1e-6)
        gate, ds = self.ws(torch.cat([s, vdot], -1)).split([self.vdim, self.sdim], dim=-1)
        dv = gate[:, :, None] * vg
        if self.wv1 is not None:
            dv = self.wv1(dv)
        s = (s + ds) * mf
        v = (v + dv) * mf[..., None]
        return s, v, p, e


class EQGAT(nn.Module):
    """EQGAT-diff style E(3)-equivariant attention network (Le, Cremer, Noé, Clevert & Schütt, ICLR 2024).

    Scalar ``s`` ``(B, N, S)``, vector ``v`` ``(B, N, 3, V)``, hidden positions ``p`` and edge
    ``e`` ``(B, N, N, E)`` features; ``layers`` :class:`EQGATLayer` s, each preceded by
    :class:`_GraphNorm`. Embeddings: ``s = W h``, ``v = 0``, ``p = pos - centre``,
    ``e = W_e edge_attr`` (zeros when ``edge_in_features == 0``). Heads (EQGAT's
    ``PredictionHeadEdge``): ``s' = silu(W s)``, ``pos_out = W_c v`` (one vector channel, mean
    removed), ``h_out = W_h s'``, ``edge_out = W_2 silu(W_1 [s'_i + s'_j + W_b sym(e), |p_i - p_j|^2])``.
    """

    def __init__(self, config: EQGATConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.embedding = nn.Linear(c.in_features, c.width)
        self.edge_embedding = nn.Linear(c.edge_in_features, c.edge_width) if c.edge_in_features else None
        self.norms = nn.ModuleList(_GraphNorm(c.width) for _ in range(c.layers))
        self.layers = nn.ModuleList(
            EQGATLayer(c.width, c.vector_width, c.edge_width, has_v_in=i > 0, use_mlp_update=i < c.layers - 1)
            for i in range(c.layers)
        )
        self.shared = nn.Linear(c.width, c.width)
        self.coords_lin = nn.Linear(c.vector_width, 1, bias=False)
        self.atoms_lin = nn.Linear(c.width, c.out_features)
        if c.edge_out_features:
            self.bond_mapping = nn.Linear(c.edge_width, c.width)
            self.bonds_lin_0 = nn.Linear(c.width + 1, c.width)
            self.bonds_lin_1 = nn.Linear(c.width, c.edge_out_features)
        else:
            self.bond_mapping = self.bonds_lin_0 = self.bonds_lin_1 = None

    def forward(
        self, pos: Tensor, h: Tensor, node_mask: Tensor, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """See the module docstring for shapes; ``h`` already carries the time / noise-level features."""
        c = self.config
        _check_inputs(self, pos, h, node_mask, edge_attr, c.in_features, c.edge_in_features)
        pos, h, emask, edge_attr = _sanitise(pos, h, node_mask, edge_attr)
        m = node_mask.to(pos.dtype)
        mf = m[..., None]
        b, n = pos.shape[:2]
        emask_f = emask[..., None].to(pos.dtype)
        p = remove_masked_mean(pos, node_mask)
        s = self.embedding(h) * mf
        v = pos.new_zeros(b, n, 3, c.vector_width)
        if self.edge_embedding is not None:
            e = self.edge_embedding(edge_attr) * emask_f
        else:
            e = pos.new_zeros(b, n, n, c.edge_width)
        for norm, layer in zip(self.norms, self.layers, strict=True):
            s, v = norm(s, v, m)
            s, v, p, e = layer(s, v, p, e, emask, m)
        s = fn.silu(self.shared(s))
        pos_out = remove_masked_mean(self.coords_lin(v).squeeze(-1), node_mask)
        h_out = self.atoms_lin(s) * mf
        edge_out = None
        if self.bonds_lin_1 is not None:
            r = p[:, :, None] - p[:, None]
            f = s[:, :, None] + s[:, None] + self.bond_mapping(0.5 * (e + e.transpose(1, 2)))
            y = fn.silu(self.bonds_lin_0(torch.cat([f, (r * r).sum(-1, keepdim=True)], -1)))
            edge_out = self.bonds_lin_1(y) * emask_f
        return pos_out, h_out, edge_out


@attrs.frozen(kw_only=True)
class EQGATConfig:
    """Hyper-parameters of an :class:`EQGAT`; :meth:`build` makes a fresh module (global torch RNG).

    Defaults follow EQGAT-diff (256 scalar, 64 vector, 32 edge channels, 12 layers).
    ``in_features`` counts the time / noise-level features the caller concatenates into ``h``.
    """

    in_features: int = attrs.field(validator=v.ge(1))
    out_features: int = attrs.field(validator=v.ge(1))
    edge_in_features: int = attrs.field(default=0, validator=v.ge(0))
    edge_out_features: int = attrs.field(default=0, validator=v.ge(0))
    width: int = attrs.field(default=256, validator=v.ge(1))
    vector_width: int = attrs.field(default=64, validator=v.ge(1))
    edge_width: int = attrs.field(default=32, validator=v.ge(1))
    layers: int = attrs.field(default=12, validator=v.ge(1))

    def build(self) -> EQGAT:
        return EQGAT(self)
