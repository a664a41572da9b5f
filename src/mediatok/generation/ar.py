"""A Llama-style autoregressive transformer over any codec's tokens, with a static KV cache.

Paper: LlamaGen (Sun et al. 2024, "Autoregressive model beats diffusion: Llama for scalable image
generation"): a plain Llama decoder (RMSNorm, SwiGLU, RoPE, no biases) over VQ codes in raster
order, the class as the first token, classifier-free guidance from class dropout.

How we differ: the model reads any `TokenSpec` through `SequenceLayout`, so one class serves 1-D
tokens (TiTok, audio), grids (`"H W"`, axial 2-D RoPE from the grid coordinates) and several
quantizer levels (`"Q T"` read as `"T Q"`: one combined vocabulary, a level embedding, and the
logits of ids of other levels masked to -inf). A 1-D layout (`"N"`, `"T"`) may be variable-length
(`ARConfig.variable_length`: audio clips of different durations), its samples then end early with
an end token; fixed-length data (TiTok's K tokens, every grid) always samples all L tokens.
Unconditional models read a learned start token instead of a class token. This file holds the
math (the teacher-forced pass, the prefill and one cached decode step); the sampling loop and its
compiled steps are `mediatok.generation.engine.ARDecodeEngine`, which `generate` runs.

Sequence and positions: one prefix token (class or start) at slot 0, token i at slot i + 1.
Slot s's output predicts token s: logits[:, 0] gives token 0 from the prefix alone, logits[:, i]
gives token i from the prefix and tokens < i, logits[:, L] gives the end token (the only valid
id there). RoPE coordinates come from `SequenceLayout.coordinates`; the prefix sits at -1 on
every axis (`mediatok.nn.rope.with_prefix`).

End token: id V, the head's row V (the head has V + 1 rows rounded up to a multiple of 64;
the logits of the rows past V are sliced off). Variable-length models: a valid prediction at
tokens 1..L-1 (and at L) and the target right after a sample's last token when it is shorter
than L. Fixed-length models: -inf at every token 0..L-1, never a target, never drawn; it stays
the only finite logit at L, after the last token, which nothing reads (a row of -inf only would
make the log-softmax there NaN).

Layout: ids `(B, n)` in read order (n <= L); lengths `(B,)` along `spec.length_axis`; logits
`(B, n + 1, V + 1)`; KV cache `(B, heads, 1 + L, head_dim)` per layer; samples `(B, *shape)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mediatok.config import check_choice, from_dict
from mediatok.generation.engine import ARDecodeEngine
from mediatok.generation.llama import LlamaBlock, RMSNorm
from mediatok.generation.sampling import GeneratedCodes, SampleSettings, resolve_settings
from mediatok.generation.sequence import IGNORE_INDEX, SequenceLayout
from mediatok.nn.rope import rope_tables, with_prefix
from mediatok.tokens import TokenSpec

__all__ = [
    "SIZES",
    "ARConfig",
    "ARTransformer",
    "build_ar_transformer",
    "resolve_variable_length",
]

# (dim, depth, heads) of LlamaGen's class-conditional sizes: `ARConfig.preset`.
SIZES = {"B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1280, 36, 20)}


@dataclass
class ARConfig:
    """AR transformer settings.

    Attributes:
        dim, depth, heads: width, blocks and attention heads (dim / heads must be even).
        mlp_ratio: SwiGLU hidden width over dim; None: LlamaGen's 8/3 · dim rounded up to a
            multiple of 256.
        norm_eps: RMSNorm epsilon.
        rope_base: RoPE base.
        num_classes: class-conditional with this many classes (plus a null class for CFG);
            0 is unconditional.
        class_dropout: probability that a training label is replaced by the null class.
        max_tokens: sequence length L without the prefix; None takes it from the token shape.
        qk_norm: RMSNorm on queries and keys per head.
        dropout: dropout on the embeddings, attention weights and residual branches.
        variable_length: whether samples may end before L tokens with the end token. True for
            data of different lengths (audio clips); False for a fixed token count (TiTok's K
            tokens: 31 of 32 do not decode), then every sample has all L tokens. Only 1-D
            layouts may be True; `mediatok train` decides it from the training shards
            (`resolve_variable_length`) unless the config sets it.
    """

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float | None = None
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    num_classes: int = 0
    class_dropout: float = 0.1
    max_tokens: int | None = None
    qk_norm: bool = False
    dropout: float = 0.0
    variable_length: bool = False

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads", "max_tokens", "num_classes"):
            value, low = getattr(self, name), int(name != "num_classes")
            if value is not None and value < low:
                raise ValueError(f"expected {name} >= {low}, got {value}")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"expected dim / heads an even integer, got {self.dim} / {self.heads}")
        if self.mlp_ratio is not None and not self.mlp_ratio > 0:
            raise ValueError(f"expected mlp_ratio > 0 or None, got {self.mlp_ratio}")
        for name in ("class_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"expected {name} in [0, 1), got {getattr(self, name)}")
        if not isinstance(self.variable_length, bool):
            raise TypeError(f"expected variable_length True or False, got {self.variable_length!r}")

    @classmethod
    def preset(cls, size: str, **overrides: Any) -> ARConfig:
        """The settings of one of LlamaGen's sizes.

        Args:
            size: "B" (111M parameters at 16384 codes, 256 tokens, 1000 classes), "L" or "XL".
            **overrides: other fields (num_classes, qk_norm, ...).

        Returns:
            The config.

        Raises:
            ValueError: an unknown size (the valid ones are listed).
        """
        check_choice("size", size, SIZES)
        return cls(**dict(zip(("dim", "depth", "heads"), SIZES[size], strict=True)), **overrides)

    @property
    def hidden(self) -> int:
        """The SwiGLU hidden width, resolved."""
        if self.mlp_ratio is not None:
            return int(self.dim * self.mlp_ratio)
        return 256 * math.ceil(8 * self.dim / 3 / 256)


class ARTransformer(nn.Module):
    """Next-token transformer over the combined-id sequence of a `TokenSpec`.

    Args:
        config: the settings.
        spec: the codec's token contract.
        token_shape: one sample's code shape in layout order (for 1-D layouts, the longest
            sample); None for 1-D layouts takes `(config.max_tokens,)`.

    Attributes:
        layout: the `SequenceLayout`; max_tokens: L; vocab_size: V; end_id: V;
        null_class: the label of the null class (= num_classes) of a conditional model;
        variable_length: whether samples may end early (`ARConfig.variable_length`);
        engine: the `ARDecodeEngine` that `generate` runs.
    """

    def __init__(self, config: ARConfig, spec: TokenSpec, token_shape: Sequence[int] | None = None):
        super().__init__()
        if not isinstance(config, ARConfig):
            raise TypeError(f"expected an ARConfig, got {type(config).__name__}")
        if not isinstance(spec, TokenSpec):
            raise TypeError(f"expected a TokenSpec, got {type(spec).__name__}")
        if token_shape is None and spec.ndim == 1 and config.max_tokens is not None:
            token_shape = (config.max_tokens,)
        if token_shape is None or config.max_tokens not in (None, math.prod(token_shape)):
            raise ValueError(
                f"expected a token_shape for layout {spec.layout!r} (1-D: or config.max_tokens) "
                f"and max_tokens None or its size, got {token_shape}, {config.max_tokens}"
            )
        if config.variable_length and spec.ndim != 1:
            raise ValueError(
                f"expected variable_length False for layout {spec.layout!r} (only 1-D layouts "
                "may end early), got True"
            )
        self.config, self.spec = config, spec
        self.layout = SequenceLayout(spec, token_shape)
        length, vocab = self.layout.length, self.layout.vocab_size
        self.max_tokens, self.vocab_size, self.end_id = length, vocab, vocab
        self.variable_length, self.null_class = config.variable_length, config.num_classes
        self.token_embedding = nn.Embedding(vocab, config.dim)
        levels = spec.num_levels
        self.level_embedding = nn.Embedding(levels, config.dim) if levels > 1 else None
        if config.num_classes:
            self.class_embedding = nn.Embedding(config.num_classes + 1, config.dim)  # + null
            self.register_parameter("start_token", None)
        else:
            self.class_embedding = None
            self.start_token = nn.Parameter(torch.zeros(config.dim))
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            LlamaBlock(c.dim, c.heads, c.hidden, c.norm_eps, c.qk_norm, c.dropout)
            for c in [config] * config.depth
        )
        self.norm = RMSNorm(config.dim, config.norm_eps)
        # V + 1 outputs (+ the end token), rounded up to a multiple of 64 so that the matmul's
        # rows stay aligned for tensor cores (16,385 is not); the extra rows are sliced off.
        self.head = nn.Linear(config.dim, 64 * math.ceil((vocab + 1) / 64), bias=False)

        coordinates = with_prefix(self.layout.coordinates)  # (1 + L, A)
        cos, sin = rope_tables(coordinates, config.dim // config.heads, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)  # (1 + L, head_dim/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        level_ids, sizes = self.layout.level_ids, torch.tensor(spec.vocab_sizes)
        lower = self.layout.offsets[level_ids]  # (L,) first valid id per position
        self.register_buffer("level_ids", level_ids, persistent=False)  # (L,)
        self.register_buffer("id_lower", lower, persistent=False)
        self.register_buffer("id_upper", lower + sizes[level_ids], persistent=False)
        # Each position's index along the spec's length axis, which `lengths` count (T of "Q T").
        self.extent = self.layout.token_shape[spec.length_axis]
        column = self.layout.coordinate_axes.index(spec.axes[spec.length_axis])
        self.register_buffer("extent_index", self.layout.coordinates[:, column], persistent=False)
        # Valid outputs, one row per kind of position: each level's ids (and the end token after
        # token 0 when variable-length), then the end token alone (position L).
        allowed, rows = F.pad(self.layout.vocab_mask, (0, 1), value=False), level_ids  # (Q, V + 1)
        if self.variable_length:  # one level: row 0 for token 0, row 1 (with end) for the rest
            with_end = allowed.clone()
            with_end[:, vocab] = True
            allowed, rows = torch.cat([allowed, with_end]), (torch.arange(length) > 0).long()
        allowed = torch.cat([allowed, torch.arange(vocab + 1)[None] == vocab])  # (rows, V + 1)
        mask_rows = F.pad(rows, (0, 1), value=len(allowed) - 1)  # (L + 1,) row of each output
        self.register_buffer("blocked_ids", ~allowed, persistent=False)  # True: logit is -inf
        self.register_buffer("mask_rows", mask_rows, persistent=False)
        self._engine: ARDecodeEngine | None = None  # made by the first `generate`
        self._init_weights()

    def _init_weights(self) -> None:
        # N(0, 0.02), residual projections scaled by 1/sqrt(2·depth) (GPT-2): the residual
        # stream's variance then does not grow with depth at initialization. Norms stay at 1.
        residual = 1 / math.sqrt(2 * self.config.depth)
        for name, parameter in self.named_parameters():
            if parameter.ndim == 2 or name == "start_token":
                scale = residual if name.endswith(("proj.weight", "down.weight")) else 1.0
                nn.init.normal_(parameter, std=0.02 * scale)

    def logits(
        self, ids: Tensor, labels: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """Teacher-forced logits.

        Args:
            ids: `(B, n)` combined ids in read order (`SequenceLayout.flatten`), n <= L;
                positions at or after a sample's length may hold anything (padding).
            labels: `(B,)` classes in `[0, num_classes]` (num_classes is the null class) of a
                conditional model, None for the null class; must be None when unconditional.
            lengths: `(B,)` each sample's extent along the spec's length axis (tokens for 1-D
                layouts, in `[1, n]`; T for "Q T", H for "H W"); positions beyond are padding.
                None: no padding.

        Returns:
            `(B, n + 1, V + 1)`: `[:, i]` predicts token i from the prefix and tokens < i,
            `[:, n]` the token after the last one given (or the end token); ids invalid at a
            position (another level's, or the end token where it cannot come) are -inf.
        """
        ids, _ = self._check_ids(ids, lengths)
        return self._run(ids, self._check_labels(labels, len(ids)), "plain")

    def forward(
        self, codes: Tensor, labels: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """The training loss (what DDP and `torch.compile` wrap): the mean next-token
        cross-entropy over the real tokens (and end tokens) of a batch.

        In training mode each label becomes the null class with probability `class_dropout`.

        Args:
            codes: codes `(B, *token_shape)` in layout order, or combined ids `(B, n)` in read
                order, right-padded (for 1-D layouts, as from `pad_collate`, the two coincide).
            labels: as in `logits`.
            lengths: as in `logits`. For a variable-length model a sample shorter than L is
                followed by the end token, which is a target too; for a fixed-length one the
                positions past its length are padding only.

        Returns:
            A scalar (fp32).
        """
        if codes.ndim == 1 + self.spec.ndim and self.spec.ndim > 1:
            codes = self.layout.flatten(codes)  # (B, L)
        ids, real = self._check_ids(codes, lengths)
        batch, length = ids.shape
        labels = self._check_labels(labels, batch)
        if self.training and labels is not None and self.config.class_dropout > 0:
            dropped = torch.rand(batch, device=labels.device) < self.config.class_dropout
            labels = labels.masked_fill(dropped, self.null_class)
        logits = self._run(ids, labels, "plain")  # (B, n + 1, V + 1)
        targets = ids.masked_fill(~real, IGNORE_INDEX)
        targets = F.pad(targets, (0, 1), value=IGNORE_INDEX)  # (B, n + 1)
        if self.variable_length:  # real tokens are a prefix; the end token follows it
            count = real.sum(dim=1, keepdim=True)  # (B, 1)
            position = torch.arange(length + 1, device=ids.device)  # (n + 1,)
            targets = targets.masked_fill(
                (position == count) & (count < self.max_tokens), self.end_id
            )
        logits, targets = logits.flatten(0, 1).float(), targets.flatten()  # (B·(n + 1), ...)
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def _run(self, ids: Tensor, labels: Tensor | None, mode: str) -> Tensor:
        """Checked ids `(B, n)` → masked logits `(B, n + 1, V + 1)`."""
        batch, length = ids.shape
        x = self.token_embedding(ids)  # (B, n, D)
        if self.level_embedding is not None:
            x = x + self.level_embedding(self.level_ids[:length])
        x = self.embedding_dropout(torch.cat([self._prefix(labels, batch), x], dim=1))
        cos, sin = self.rope_cos[: length + 1], self.rope_sin[: length + 1]  # (1 + n, d/2)
        for block in self.blocks:
            x = block(x, cos, sin, mode)  # (B, 1 + n, D)
        logits = self.head(self.norm(x))[..., : self.vocab_size + 1]  # (B, 1 + n, V + 1)
        blocked = self.blocked_ids[self.mask_rows[: length + 1]]  # (1 + n, V + 1)
        return logits.masked_fill(blocked, float("-inf"))

    def _prefix(self, labels: Tensor | None, batch: int) -> Tensor:
        """The class (or null class) or start token: `(B, 1, D)`."""
        if self.class_embedding is None:
            return self.start_token.expand(batch, 1, -1)
        if labels is None:
            labels = torch.full((batch,), self.null_class, device=self.head.weight.device)
        return self.class_embedding(labels)[:, None]  # (B, 1, D)

    def allocate_cache(self, batch_size: int, dtype: torch.dtype | None = None) -> None:
        """Allocate `(batch_size, heads, 1 + L, head_dim)` keys and values per layer, zero-filled
        (masked slots must be finite); one of the same shape, dtype and device is kept, so that a
        compiled step keeps its static addresses.

        Args:
            batch_size: rows (doubled for CFG).
            dtype: None → the autocast dtype when autocast is on for the model's device, else
                the parameters' dtype.
        """
        device = self.head.weight.device
        if dtype is None:
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else self.head.weight.dtype
        heads, head_dim = self.config.heads, self.config.dim // self.config.heads
        shape = (batch_size, heads, 1 + self.max_tokens, head_dim)
        for block in self.blocks:
            attention, old = block.attention, block.attention.k_cache
            if old is None or old.shape != shape or old.dtype != dtype or old.device != device:
                attention.k_cache = torch.zeros(shape, dtype=dtype, device=device)
                attention.v_cache = torch.zeros(shape, dtype=dtype, device=device)

    def free_cache(self) -> None:
        """Drop the KV cache."""
        for block in self.blocks:
            block.attention.k_cache = block.attention.v_cache = None

    def prefill(self, ids: Tensor, labels: Tensor | None = None) -> Tensor:
        """Run the prefix and a prompt `ids` `(B, n)`, n >= 0, filling cache slots `[0, 1 + n)`.

        B must be the cache's batch size. Returns `logits(ids, labels)`: `(B, n + 1, V + 1)`.
        """
        ids, _ = self._check_ids(ids, None)
        self._check_cache(len(ids))
        return self._run(ids, self._check_labels(labels, len(ids)), "prefill")

    def decode_step(self, ids: Tensor, position: Tensor) -> Tensor:
        """Feed token `position` of every row; cache slots before it must be filled.

        Args:
            ids: `(B, 1)` combined ids of token `position`.
            position: 0-d int64 tensor on the model's device, in `[0, L)`.

        Returns:
            `(B, V + 1)` masked logits of token `position + 1`, as `logits(...)[:, position + 1]`.
        """
        position = torch.as_tensor(position, device=self.head.weight.device)
        if position.ndim or position.is_floating_point() or not 0 <= position < self.max_tokens:
            raise ValueError(f"expected a 0-d position in [0, {self.max_tokens}), got {position}")
        if ids.ndim != 2 or ids.shape[1] != 1:
            raise ValueError(f"expected ids (B, 1), got shape {tuple(ids.shape)}")
        ids, _ = self._check_ids(ids, None, int(position))
        self._check_cache(len(ids))
        return self._decode(ids, position.to(torch.int64))

    def _decode(self, ids: Tensor, position: Tensor, span: int | None = None) -> Tensor:
        """Unchecked `decode_step`: no data-dependent control flow, the same shapes every step.

        `span`: attend over cache slots `[0, span)` only (> position + 1; None: all). A static
        int, so that each span compiles to its own graph (`ARDecodeEngine.spans`)."""
        slot = (position + 1).reshape(1)  # (1,) cache slot of this token
        x = self.token_embedding(ids)  # (B, 1, D)
        if self.level_embedding is not None:
            x = x + self.level_embedding(self.level_ids.index_select(0, position.reshape(1)))
        cos = self.rope_cos.index_select(0, slot)  # (1, d/2)
        sin = self.rope_sin.index_select(0, slot)
        span = span or self.blocks[0].attention.k_cache.shape[2]
        visible = (torch.arange(span, device=ids.device) <= slot).reshape(1, 1, 1, span)
        for block in self.blocks:
            x = block(x, cos, sin, "decode", slot, visible)  # (B, 1, D)
        logits = self.head(self.norm(x))[:, 0, : self.vocab_size + 1]  # (B, V + 1)
        blocked = self.blocked_ids.index_select(0, self.mask_rows.index_select(0, slot))
        return logits.masked_fill(blocked, float("-inf"))  # (B, V + 1)

    @property
    def engine(self) -> ARDecodeEngine:
        """The decode engine that `generate` runs, made on first use and kept with its compiled
        steps, so that later calls compile nothing new."""
        if self._engine is None:
            self._engine = ARDecodeEngine(self)
        return self._engine

    @torch.no_grad()
    def generate(
        self,
        num_samples: int | None = None,
        labels: Tensor | Sequence[int] | None = None,
        settings: SampleSettings | None = None,
        *,
        generator: torch.Generator | None = None,
        max_tokens: int | None = None,
    ) -> GeneratedCodes:
        """Sample token sequences (in eval mode; the training flag is restored after).

        Args:
            num_samples: B samples of the null class (conditional) or unconditional; or None with
            labels: `(B,)` classes of a conditional model.
            settings: how to draw (None: `SampleSettings()`), checked for an AR generator
                (`SampleSettings.check_for`). With labels, guidance runs when cfg_scale != 1:
                the labels' rows and null-class rows go through the model as one batch of 2B.
                `compile`: each step compiled (see `mediatok.generation.engine`), once per
                model and combination of batch size, guidance on or off, greedy or not, top_k,
                and nucleus on or off.
            generator: random source on the model's device; the same seed gives the same samples.
            max_tokens: tokens to sample, <= L; fewer than L only where samples may be shorter:
                a variable-length model, or a 1-D spec whose geometry says any prefix decodes
                (`prefix_decodable`: FlexTok's ordered tokens), which then stops at k tokens.

        Returns:
            `GeneratedCodes(codes, lengths)`: codes `(B, *token_shape)` in layout order
            (variable-length: `(B, max_tokens)`, code 0 after a sample's end), lengths `(B,)`
            int64 tokens before the end token (fixed-length: always the full extent along the
            length axis).
        """
        settings = resolve_settings(settings)
        device = self.head.weight.device
        batch = num_samples if labels is None else len(labels)
        wrong = isinstance(batch, bool) or not isinstance(batch, int) or batch < 1
        if wrong or num_samples not in (None, batch):
            got = f"num_samples={num_samples!r}, labels={labels!r}"
            raise ValueError(f"expected num_samples >= 1, or labels (of that many), got {got}")
        labels = self._check_labels(labels, batch)
        settings.check_for("ar", num_tokens=self.max_tokens, conditional=labels is not None)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(f"expected a generator on {device.type}, got {generator.device}")
        most = self.max_tokens
        steps = most if max_tokens is None else max_tokens
        prefixes = self.spec.ndim == 1 and bool(self.spec.geometry.get("prefix_decodable"))
        if not (1 <= steps <= most if self.variable_length or prefixes else steps == most):
            valid = f"in [1, {most}]" if self.variable_length or prefixes else f"{most}"
            kind = "variable-length" if self.variable_length else "fixed-length"
            raise ValueError(
                f"expected max_tokens None or {valid} for this {kind} model, got {steps}"
            )
        return self.engine.sample(labels, batch, steps, settings, generator)

    def _check_ids(
        self, ids: Tensor, lengths: Tensor | None, start: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Ids `(B, n)` of tokens `start..start + n` checked against their levels, with padding
        replaced by id 0, and the mask of real positions `(B, n)`."""
        if ids.ndim != 2 or ids.is_floating_point() or start + ids.shape[1] > self.max_tokens:
            raise ValueError(
                f"expected integer ids (B, n) with n <= {self.max_tokens - start}, got "
                f"{ids.dtype} of shape {tuple(ids.shape)}"
            )
        (batch, length), ids = ids.shape, ids.to(torch.int64)
        real = torch.ones_like(ids, dtype=torch.bool)  # (B, n)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=ids.device)
            if lengths.shape != (batch,) or lengths.is_floating_point():
                got = f"{lengths.dtype} of shape {tuple(lengths.shape)}"
                raise ValueError(f"expected {batch} integer lengths, got {got}")
            real = self.extent_index[start:][:length] < lengths[:, None]
            longest = length if self.variable_length else self.extent
            bad = (lengths < min(longest, 1)) | (lengths > longest)
            if not torch.compiler.is_compiling() and bool(bad.any()):
                raise ValueError(f"expected lengths in [1, {longest}], got {lengths.tolist()}")
        if torch.compiler.is_compiling():
            return ids.masked_fill(~real, 0), real
        lower, upper = self.id_lower[start:][:length], self.id_upper[start:][:length]  # (n,)
        bad = ((ids < lower) | (ids >= upper)) & real  # (B, n)
        if bool(bad.any()):
            row, column = (int(index[0]) for index in bad.nonzero(as_tuple=True))
            raise ValueError(
                f"expected ids in [{int(lower[column])}, {int(upper[column])}) at position "
                f"{start + column} (level {int(self.level_ids[start + column])}), got "
                f"{int(ids[row, column])} in sample {row}; ids are combined ids in read order "
                "(SequenceLayout.flatten), the end token is never an input"
            )
        return ids.masked_fill(~real, 0), real

    def _check_labels(self, labels: Tensor | None, batch: int) -> Tensor | None:
        if labels is None:
            return None
        labels, null = torch.as_tensor(labels, device=self.head.weight.device), self.null_class
        if self.class_embedding is None:
            raise ValueError(f"expected labels=None for an unconditional model, got {len(labels)}")
        if labels.shape != (batch,) or labels.is_floating_point():
            got = f"{labels.dtype} of shape {tuple(labels.shape)}"
            raise ValueError(f"expected {batch} integer labels (one per sample), got {got}")
        if not torch.compiler.is_compiling() and bool(((labels < 0) | (labels > null)).any()):
            got = labels.tolist()
            raise ValueError(f"expected labels in [0, {null}] ({null}: null class), got {got}")
        return labels.to(torch.int64)

    def _check_cache(self, batch: int) -> None:
        cache = self.blocks[0].attention.k_cache
        if cache is None or cache.shape[0] != batch:
            got = "no cache" if cache is None else f"a cache for {cache.shape[0]} rows"
            raise ValueError(f"expected allocate_cache({batch}) first, got {got}")


def resolve_variable_length(spec: TokenSpec, token_shape: tuple[int, ...], lengths: Any) -> bool:
    """Whether an AR generator of `token_shape` trained on samples of `lengths` tokens may end
    samples early: for a 1-D layout, True iff some sample is shorter than the model's L tokens;
    never for a multi-axis layout.

    A sample longer than L trains on random windows of exactly L tokens (`TokenWindows`): none
    of them is cut short, and where a window stops is not where the sample ends, so the end
    token is never their target; only a sample shorter than L teaches where to stop. Shards of
    one length (TiTok's K tokens; audio clips all at least `data.window` long) thus give a
    fixed-length model, which always samples all L tokens.

    Args:
        spec: the shards' token contract.
        token_shape: the model's sample shape (for windows: the window along the length axis).
        lengths: `(num_samples,)` tokens per sample (`TokenDataset.lengths`).
    """
    if spec.ndim != 1:
        return False
    lengths = torch.as_tensor(lengths)
    return bool(lengths.numel()) and int(lengths.min()) < token_shape[0]


def build_ar_transformer(
    config: ARConfig | Mapping[str, Any] | None,
    spec: TokenSpec | Mapping[str, Any],
    token_shape: Sequence[int] | None = None,
) -> ARTransformer:
    """An `ARTransformer` from a config (or the fields that differ from the defaults; a named
    size is `ARConfig.preset`), a token spec (or its `to_dict` form) and a token shape.

    Args:
        config: the settings.
        spec: the codec's token contract.
        token_shape: one sample's code shape (see `ARTransformer`).

    Returns:
        The model, randomly initialized.

    Raises:
        ValueError: an unknown or invalid config field, a bad spec or token shape.
    """
    if config is None or isinstance(config, Mapping):
        config = from_dict(ARConfig, dict(config or {}), where="model")
    if isinstance(spec, Mapping):
        spec = TokenSpec.from_dict(spec)
    return ARTransformer(config, spec, token_shape)
