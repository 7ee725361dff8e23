"""Student: a small TensorRT-friendly U-Net.

Only Conv, ReLU, Add, Concat and nearest Upsample (plus an optional input Clip): no
normalization, nothing a TensorRT INT8 build or ONNX Runtime cannot fuse. Downsampling is a
stride-2 conv; the decoder convolves at the coarse resolution *before* upsampling, which keeps
full-resolution work (the bulk of the cost on a 512x512 slice) to a few thin layers. The output
is residual: x + f(x).
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.registry import register_model


def conv_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


def identity_conv_relu(channels: int) -> nn.Sequential:
    """3x3 conv + ReLU that starts as the identity on non-negative input (a Dirac kernel, zero
    bias): placed after a ReLU, it adds depth without changing what the network computes."""
    block = conv_relu(channels, channels)
    nn.init.dirac_(block[0].weight)
    nn.init.zeros_(block[0].bias)
    return block


def binomial_blur(channels: int) -> nn.Conv2d:
    """A fixed (not trained) depthwise 3x3 binomial blur, [1, 2, 1] x [1, 2, 1] / 16, zero padded:
    low-passes each channel before a stride-2 conv or after a nearest x2 upsample."""
    conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    taps = torch.tensor([1.0, 2.0, 1.0])
    with torch.no_grad():
        conv.weight.copy_((torch.outer(taps, taps) / 16.0).expand(channels, 1, 3, 3))
    conv.weight.requires_grad_(False)
    return conv


class WindowedHead(nn.Module):
    """First layer seeing the input through several intensity windows, one conv each, summed.

    Window ``[low, high]`` passes ``clip(x, low, high) - (low + high) / 2`` to its own 3x3 conv
    (ONNX Clip, Sub, Conv; the convs' outputs are added, then ReLU). Each conv has its own
    INT8 input quantizer, so each window keeps its own resolution: with CT normalized over
    [-160, 240] HU, a soft-tissue window [-0.5, 1.5] resolves 3 HU per INT8 step, a lung window
    [-2.35, -0.25] 3.3 HU and a bone window [1, 8] 11 HU, where one per-tensor scale over
    the whole range would step 25 HU and drown low-dose noise (docs/QUANTIZATION.md).
    """

    def __init__(self, windows: list[list[float]], out_ch: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        for window in windows:
            if not (len(window) == 2 and window[0] < window[1]):
                raise ValueError(f"input window must be [low, high] with low < high, got {window}")
        self.windows = [(float(low), float(high)) for low, high in windows]
        self.clips = nn.ModuleList(nn.Hardtanh(low, high) for low, high in self.windows)
        padding = kernel // 2 if stride == 1 else 0
        self.convs = nn.ModuleList(
            nn.Conv2d(1, out_ch, kernel, stride=stride, padding=padding, bias=index == 0)
            for index in range(len(self.windows))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """``extra``: added before the ReLU (a noise-map model's conditioning term)."""
        total = extra
        for (low, high), clip, conv in zip(self.windows, self.clips, self.convs):
            y = conv(clip(x) - (low + high) / 2.0)
            total = y if total is None else total + y
        return self.relu(total)


@register_model("student")
class Student(nn.Module):
    """Encoder/decoder with ``depth`` downsamplings; level i has ``width * 2**i`` channels,
    or ``widths[i]`` when given (then depth = len(widths) - 1; a thin full-resolution level,
    e.g. widths=[8, 24, 48], is what makes a 512x512 slice cheap).

    ``stem_stride=2`` runs the whole network at half resolution (FFDNet-style): the head is a
    learned 2x2 stride-2 space-to-depth conv and the tail a 2x2 stride-2 transposed conv back to
    full resolution, which cuts the full-resolution work that dominates CPU latency.

    ``input_clip=[low, high]`` clips what the network *sees* to that normalized range (ONNX
    ``Clip``, TensorRT's clip activation); the residual is still added to the unclipped input.
    INT8 per-tensor activations cannot hold CT's 4000 HU range and its 15 HU noise at once
    (one step of 127 over the full range is ~30 HU), so the shipped student looks at a window
    around soft tissue only and leaves values outside it unchanged (docs/QUANTIZATION.md).

    ``input_windows=[[low, high], ...]`` instead gives the first layer several windows, each
    through its own conv (:class:`WindowedHead`), so lung and bone are denoised too and INT8
    still resolves soft-tissue noise; the shipped student uses soft tissue, lung and bone.

    ``noise_map=True`` makes the input two channels, the image and a constant map of its noise
    level (model contract ``noise_map``, FFDNet-style): the map enters the first layer's
    pre-activation through its own conv (``noise_conv``, times ``NOISE_GAIN`` so that levels of
    0.01-0.2 move it), which starts at zero, so a blind checkpoint fine-tuned into a noise-map
    model (``trainer --init``) starts as the same function.

    ``extra_blocks=[n0, ..., n_depth]`` adds ``n_i`` more 3x3 conv + ReLU layers at level i of
    the decoder path (at the coarsest level before decoding starts, at the others after the
    level's ``fuse``), each starting as the identity (:func:`identity_conv_relu`), so a
    checkpoint without them fine-tuned into a deeper model (``trainer --init``) starts as the
    same function. A block at level i runs on 1/4**i of the pixels, at ``widths[i]``² weights per pixel.

    ``anti_alias=True`` blurs each level's features (:func:`binomial_blur`, fixed) before its
    stride-2 conv and after each nearest x2 upsample (Zhang 2019, "Making convolutional networks
    shift-invariant again"): less aliasing makes the output depend less on where the stride-2
    grid falls, a source of error that is not flip- or shift-equivariant (docs/DECISIONS.md 30).
    A depthwise conv per level; 0.25 GFLOP more on a 512x512 slice at the shipped widths (14.53 in all)."""

    NOISE_GAIN = 10.0

    def __init__(
        self,
        width: int = 16,
        depth: int = 2,
        widths: list[int] | None = None,
        stem_stride: int = 1,
        input_clip: list[float] | None = None,
        input_windows: list[list[float]] | None = None,
        noise_map: bool = False,
        extra_blocks: list[int] | None = None,
        anti_alias: bool = False,
    ) -> None:
        super().__init__()
        w = list(widths) if widths is not None else [width * 2**i for i in range(depth + 1)]
        if len(w) < 2 or min(w) < 1:
            raise ValueError(f"student needs at least two positive level widths, got {w}")
        self.depth = depth = len(w) - 1
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.size_multiple = 2**depth * stem_stride
        self.widths = w
        if input_clip is not None and not (len(input_clip) == 2 and input_clip[0] < input_clip[1]):
            raise ValueError(f"input_clip must be [low, high] with low < high, got {input_clip}")
        self.input_clip = nn.Hardtanh(*map(float, input_clip)) if input_clip is not None else None
        if input_windows is not None:
            if input_clip is not None:
                raise ValueError("give input_clip or input_windows, not both")
            self.head = WindowedHead(input_windows, w[0], kernel=3 if stem_stride == 1 else 2, stride=stem_stride)
        elif stem_stride == 1:
            self.head = conv_relu(1, w[0])
        else:
            self.head = nn.Sequential(nn.Conv2d(1, w[0], 2, stride=2), nn.ReLU(inplace=True))
        self.input_channels = 2 if noise_map else 1
        self.noise_conv = None
        if noise_map:
            if not isinstance(self.head, WindowedHead):
                raise ValueError("noise_map needs input_windows (the map joins the windowed first layer)")
            self.noise_conv = nn.Conv2d(1, w[0], stem_stride, stride=stem_stride, bias=False)
            nn.init.zeros_(self.noise_conv.weight)
        self.down = nn.ModuleList(
            nn.Sequential(conv_relu(w[i], w[i + 1], stride=2), conv_relu(w[i + 1], w[i + 1])) for i in range(depth)
        )
        # up[i]: from level i+1 to level i (conv at the coarse level, then nearest x2).
        self.up = nn.ModuleList(
            nn.Sequential(conv_relu(w[i + 1], w[i]), nn.Upsample(scale_factor=2, mode="nearest")) for i in range(depth)
        )
        self.fuse = nn.ModuleList(conv_relu(2 * w[i], w[i]) for i in range(depth))
        blocks = [0] * (depth + 1) if extra_blocks is None else [int(n) for n in extra_blocks]
        if len(blocks) != depth + 1 or min(blocks) < 0:
            raise ValueError(f"extra_blocks needs one count >= 0 per level ({depth + 1}), got {extra_blocks}")
        # None when unused, so that models without extra blocks keep their exact module tree.
        self.extra = (nn.ModuleList(nn.Sequential(*(identity_conv_relu(w[i]) for _ in range(n)))
                                    for i, n in enumerate(blocks)) if any(blocks) else None)
        # None when off, so that models without it keep their exact module tree.
        self.blur_down = nn.ModuleList(binomial_blur(w[i]) for i in range(depth)) if anti_alias else None
        self.blur_up = nn.ModuleList(binomial_blur(w[i]) for i in range(depth)) if anti_alias else None
        if stem_stride == 1:
            self.tail = nn.Conv2d(w[0], 1, 3, padding=1)
        else:
            self.tail = nn.ConvTranspose2d(w[0], 1, 2, stride=2)
        # Start as the identity map: training then only ever adds a learned correction.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Output plus ``features`` (the encoder feature at each level, full resolution first)."""
        if x.shape[1] != self.input_channels:
            raise ValueError(f"student expects {self.input_channels} input channel(s), got {x.shape[1]}")
        if self.noise_conv is not None:
            x, level = x[:, :1], x[:, 1:]
            skips = [self.head(x, self.noise_conv(level * self.NOISE_GAIN))]
        else:
            skips = [self.head(self.input_clip(x) if self.input_clip is not None else x)]
        for i, down in enumerate(self.down):
            skips.append(down(self._blur(self.blur_down, i, skips[-1])))
        y = self._extra(self.depth, skips[-1])
        for i in reversed(range(self.depth)):
            y = self._extra(i, self.fuse[i](torch.cat([skips[i], self._blur(self.blur_up, i, self.up[i](y))], 1)))
        return x + self.tail(y), {"features": skips, "deep": []}

    @staticmethod
    def _blur(blurs: nn.ModuleList | None, level: int, y: torch.Tensor) -> torch.Tensor:
        return y if blurs is None else blurs[level](y)

    def _extra(self, level: int, y: torch.Tensor) -> torch.Tensor:
        return y if self.extra is None else self.extra[level](y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]
