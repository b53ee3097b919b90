"""AdaIN-SliceGAN networks: a 3D generator steered by attributes, and 2D critics.

Shapes use fixed letters: B batch, C channels (phases one-hot), L latent edge, D/H/W volume edges, P patch edge,
k number of conditioning attributes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def normalise_attributes(attrs: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Raw attribute values (B, k) -> code values (B, k); the trained range maps to [-1, 1] when
    ``code_normalisation == "range"`` (values outside the range extrapolate linearly)."""
    if config.code_normalisation == "none":
        return attrs
    low = attrs.new_tensor([r[0] for r in config.attribute_ranges])
    high = attrs.new_tensor([r[1] for r in config.attribute_ranges])
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return 2.0 * (attrs - low) / span - 1.0


class AdaIN(nn.Module):
    """Adaptive instance normalisation: each channel of each volume is normalised by its own mean/std over
    (D, H, W), then scaled by ``sigma_y`` and shifted by ``mu_y`` computed from the attribute code.

    ``stats`` (mean, std), each (1 or B, C, 1, 1, 1), replaces the per-volume statistics; tiled generation uses
    it so every tile of a large volume is normalised identically (no seams).
    """

    eps = 1e-5

    def forward(self, x: torch.Tensor, mu_y: torch.Tensor, sigma_y: torch.Tensor,
                stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if stats is None:
            stats = self.statistics(x)
        mean, std = stats
        scale = sigma_y[:, :, None, None, None]
        shift = mu_y[:, :, None, None, None]
        return (x - mean) / std * scale + shift

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-volume, per-channel (mean, std) of x (B, C, D, H, W), float32 for stability under bf16."""
        dims = (2, 3, 4)
        if x.dtype == torch.float32:
            # Two plain passes (mean, then the mean square about it): torch.var_mean's CPU kernel takes 5-10x
            # as long on the cpu preset's activations, about 2x with its backward (bench/bench_generator_ops.py).
            # Their temporaries, x's size, stay within generate's memory estimate in float32; bfloat16 keeps
            # var_mean on its float32 copy.
            mean = x.mean(dim=dims, keepdim=True)
            var = (x - mean).square().mean(dim=dims, keepdim=True)
        else:
            var, mean = torch.var_mean(x.float(), dim=dims, keepdim=True, correction=0)
        return mean.to(x.dtype), (var + self.eps).sqrt().to(x.dtype)


class StyleMLP(nn.Module):
    """c = code * ones(code_dim) -> ReLU MLP -> per-AdaIN-layer heads (mu_y, sigma_y), sigma_y >= 0."""

    def __init__(self, config: ModelConfig, channels: list[int]):
        super().__init__()
        self.code_dim = config.code_dim
        layers, width = [], config.code_dim
        for _ in range(config.mlp_layers):
            layers += [nn.Linear(width, config.mlp_width), nn.ReLU()]
            width = config.mlp_width
        self.body = nn.Sequential(*layers)
        self.mu_heads = nn.ModuleList(nn.Linear(width, c) for c in channels)
        self.sigma_heads = nn.ModuleList(nn.Linear(width, c) for c in channels)
        self.sigma_activation = F.softplus if config.sigma_activation == "softplus" else F.relu
        if config.sigma_activation == "softplus":
            # Start at sigma_y ~= 1 (identity scale) rather than softplus(0) = 0.69.
            for head in self.sigma_heads:
                nn.init.constant_(head.bias, 0.5413)

    def forward(self, code: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # The seed tiles the scalar code over code_dim entries; with k attributes each gets code_dim // k slots.
        k = code.shape[1]
        if k == 0:  # an unconditioned model: a constant code
            c = code.new_zeros((code.shape[0], self.code_dim))
        else:
            c = code.repeat_interleave(-(-self.code_dim // k), dim=1)[:, : self.code_dim]
        hidden = self.body(c)
        return [(mu(hidden), self.sigma_activation(sigma(hidden)))
                for mu, sigma in zip(self.mu_heads, self.sigma_heads)]


class Generator(nn.Module):
    """SliceGAN generator: ConvTranspose3d stack (kernel 4, stride 2, padding 2,...,2,3), AdaIN after every
    transposed conv but the last; softmax output for n-phase, sigmoid otherwise. With ``output_layer =
    "upsample"`` the last layer is a 1x1x1 conv followed by trilinear x2 upsampling of the logits; with
    ``"upsample_conv"`` trilinear x2 upsampling of the last features followed by a 3x3x3 conv.

    A latent z of edge L gives a volume of edge ``voxels_per_latent * (L - 2)`` (4 -> 64 for the 64 preset).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        widths = [config.z_channels, *config.g_widths, config.n_channels]
        paddings = [2] * (config.n_layers - 1) + [3]
        self.convs = nn.ModuleList(
            nn.ConvTranspose3d(c_in, c_out, kernel_size=4, stride=2, padding=pad, bias=False)
            for c_in, c_out, pad in zip(widths[:-2], widths[1:-1], paddings[:-1]))
        if config.output_layer == "upsample":
            self.convs.append(nn.Conv3d(widths[-2], widths[-1], kernel_size=1, bias=False))
        elif config.output_layer == "upsample_conv":
            self.convs.append(nn.Conv3d(widths[-2], widths[-1], kernel_size=3, bias=False))
        else:
            self.convs.append(nn.ConvTranspose3d(widths[-2], widths[-1], kernel_size=4, stride=2,
                                                 padding=paddings[-1], bias=False))
        self.adain = AdaIN()
        self.style = StyleMLP(config, list(config.g_widths))
        # (C,) added to the output logits: the phase-fraction calibration of an exported n-phase model
        # (slicegan_core.fractions); zeros while training, and in models written before it existed.
        self.register_buffer("phase_offset", torch.zeros(widths[-1]))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's; weights without ``phase_offset`` (older models and checkpoints) get zeros."""
        if "phase_offset" not in state_dict:
            state_dict = {**state_dict, "phase_offset": torch.zeros_like(self.phase_offset)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @staticmethod
    def output_edge(latent_edge: int, config: ModelConfig) -> int:
        return config.voxels_per_latent * (latent_edge - 2)

    def forward(self, z: torch.Tensor, attrs: torch.Tensor,
                stats: list | None = None, collect_stats: list | None = None,
                activate: bool = True) -> torch.Tensor:
        """z (B, z_channels, L, L', L''), attrs (B, k) raw attribute values -> (B, C, D, H, W) probabilities.

        ``stats``: per AdaIN layer (mean, std) to use instead of per-volume statistics (tiling);
        ``collect_stats``: a list that receives the statistics used (for the first tile of a tiled volume);
        ``activate=False`` returns the logits (labels only need their argmax: saves a softmax at inference).
        """
        styles = self.style(normalise_attributes(attrs, self.config))
        x = z
        for i, conv in enumerate(self.convs):
            if i == len(self.convs) - 1 and self.config.output_layer == "upsample_conv":
                x = _upsample_features(x)
            x = conv(x)
            if i == len(self.convs) - 1:
                if self.config.output_layer == "upsample":
                    x = _upsample_logits(x)
                elif self.config.output_layer == "upsample_conv":
                    x = x[:, :, 1:-1, 1:-1, 1:-1]
                x = x + self.phase_offset.view(1, -1, 1, 1, 1).to(x.dtype)
                break
            layer_stats = stats[i] if stats is not None else self.adain.statistics(x)
            if collect_stats is not None:
                collect_stats.append(layer_stats)
            x = F.relu(self.adain(x, *styles[i], stats=layer_stats))
        return self.activate(x) if activate else x

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> probabilities: softmax over phases (n-phase), sigmoid otherwise; float32."""
        if self.config.image_type == "n-phase":
            return torch.softmax(logits.float(), dim=1)
        return torch.sigmoid(logits.float())


def _upsample_features(features: torch.Tensor) -> torch.Tensor:
    """(B, F, n, n', n'') -> (B, F, 2n, ...): trilinear x2 of the last feature grid (``"upsample_conv"``), whose
    3x3x3 conv then places the logits per voxel (a learned upsampling filter, not a fixed trilinear one)."""
    return F.interpolate(features.float(), scale_factor=2, mode="trilinear",
                         align_corners=False).to(features.dtype)


def _upsample_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, n, n', n'') logits -> (B, C, 2n-4, ...): trilinear x2 (align_corners=False), then 2 voxels cut from
    every face, computed axis by axis (``_upsample_axis``) in float32.

    The cut removes exactly the voxels whose interpolation would reach past the grid (edge-clamped), so the
    output edge stays ``voxels_per_latent * (L - 2)`` and a voxel depends only on grid cells a tile also has:
    tiled generation stays exact.
    """
    x = logits.float()
    for dim in (4, 3, 2):
        x = _upsample_axis(x, dim)
    return x.to(logits.dtype)


def _upsample_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Linear x2 interpolation along ``dim`` without the two end voxels of each side, (..., n, ...) ->
    (..., 2n - 4, ...): output 2k is 0.75 x[k+1] + 0.25 x[k], output 2k+1 is 0.75 x[k+1] + 0.25 x[k+2].

    Equal to ``F.interpolate(..., mode="trilinear")`` and the crop to within rounding (4.8e-7 on unit logits),
    and on the CPU 3-4x faster forward, 2-3x with the backward (bench/bench_generator_ops.py). Plain
    multiplies and adds, so a voxel gets the same bits whatever the array's extent (tiles stay exact). Without
    autograd the two halves are written into the output in place (no stacked temporaries: generate's memory
    estimate counts this)."""
    n = x.shape[dim]
    centre = x.narrow(dim, 1, n - 2) * 0.75
    sides = (x.narrow(dim, 0, n - 2), x.narrow(dim, 2, n - 2))
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.stack([centre + side * 0.25 for side in sides], dim=dim + 1).flatten(dim, dim + 1)
    shape = list(x.shape)
    shape[dim] = 2 * (n - 2)
    out = x.new_empty(shape)
    pairs = out.unflatten(dim, (n - 2, 2))
    for k, side in enumerate(sides):
        half = pairs.select(dim + 1, k)
        torch.mul(side, 0.25, out=half)
        half.add_(centre)
    return out


class Critic(nn.Module):
    """2D WGAN critic on (B, C x critic_planes, P, P) slices (with critic_planes 3 a slice's two neighbours come
    as extra channels): Conv2d stack (kernel 4, stride 2, padding 1), then a kernel-4 conv to one score per image.

    Conditioning on the attributes (the seed's critic never saw them, so nothing tied alpha=0.15 to the 0.15
    data): ``"channel"`` appends the normalised attributes as constant input planes; ``"projection"`` adds
    <embed(a), sum of last features> (Miyato & Koyama 2018); ``"none"`` is the seed's unconditional critic.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        k = len(config.attribute_names)
        in_channels = config.n_channels * config.critic_planes + (k if config.critic_conditioning == "channel" else 0)
        widths = [in_channels, *config.d_widths]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
            for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.head = nn.Conv2d(widths[-1], 1, kernel_size=4, stride=1, padding=0)
        self.embed = (nn.Linear(k, widths[-1], bias=False)
                      if config.critic_conditioning == "projection" and k > 0 else None)

    def forward(self, images: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        """images (B, C, P, P), attrs (B, k) raw values -> scores (B,)."""
        code = normalise_attributes(attrs, self.config).to(images.dtype)
        x = images
        if self.config.critic_conditioning == "channel" and code.shape[1] > 0:   # (a model without attributes: no copy)
            planes = code[:, :, None, None].expand(-1, -1, *images.shape[2:])
            x = torch.cat([x, planes], dim=1)
        # Channels-last: oneDNN's 2D convs run 1.0-1.6x faster on it (critic forward + backward, both presets,
        # float32 and bf16, measured on the 2-core CPU; docs/performance.md).
        x = x.contiguous(memory_format=torch.channels_last)
        for conv in self.convs:
            x = F.relu_(conv(x))     # in place: a conv's backward needs its input, not its output
        score = self.head(x).flatten(1).sum(1)
        if self.embed is not None:
            score = score + (self.embed(code) * x.sum(dim=(2, 3))).sum(1)
        return score.float()


def build_critics(config: ModelConfig) -> nn.ModuleList:
    """One critic shared by x, y, z slices when isotropic, otherwise one per axis (weights channels-last)."""
    critics = nn.ModuleList(Critic(config) for _ in range(1 if config.isotropic else 3))
    return critics.to(memory_format=torch.channels_last)
