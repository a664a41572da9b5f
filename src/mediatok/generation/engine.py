"""The decode engine of `ARTransformer`: its sampling loop, each step eager or compiled with
`torch.compile` (one CUDA graph per step on CUDA).

The model file holds the math (`ARTransformer._run` for the prefill, `_decode` for one cached
step, `allocate_cache` / `free_cache`, and the masks of invalid ids applied inside both); this
module holds the serving machinery, as nanoGPT's model file keeps only a plain `generate`.

One step (`ARDecodeEngine.advance`): classifier-free guidance of the labels' rows against the
null-class rows at the step's scale (`cfg_logits`), the draw from noise drawn outside the step
(`pick`), the end-token bookkeeping of a variable-length model (a sample that draws the end
token is finished, its length recorded and its later tokens 0), then the decode of the drawn
token (`ARTransformer._decode`), with no host sync. Compiled (`SampleSettings.compile`), a step
is one graph per cache span (`spans`: 4 per combination of batch size, guidance on or off,
greedy or not, top_k, and nucleus on or off); the temperature, top_p and the guidance scales are
0-d tensors, inputs of the graph, so new values compile nothing. At most `_COMBINATIONS` such
combinations in a process (dynamo's recompile limit, raised for this), then a `RuntimeError`
that says what to do. The compiled step is kept on the engine and the engine on its model
(`ARTransformer.engine`), so that later `generate` calls reuse the graphs; the KV cache then
stays allocated between calls (CUDA graphs replay on static addresses), and each step's outputs,
which the next replay overwrites, are cloned before they are kept. The same seed draws the same
tokens as eager, up to the rounding of the fused kernels.

Layout: logits `(rows, V + 1)`, rows = B, or 2B under guidance (the labels' rows, then as many
null-class rows); noise `(B, V + 1)`; drawn ids `(B, steps)`; lengths `(B,)` int64.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from mediatok.generation.sampling import (
    GeneratedCodes,
    SampleSettings,
    cfg_logits,
    cfg_scale_at,
    draw_noise,
    pick,
)
from mediatok.generation.sequence import SequenceLayout

if TYPE_CHECKING:  # ar.py imports this module
    from mediatok.generation.ar import ARTransformer

__all__ = ["ARDecodeEngine"]

_SPANS = 4  # compiled graphs per (batch, settings): see ARDecodeEngine.spans
_COMBINATIONS = 16  # (model, batch, settings) combinations compiled in a process


class _Draw(NamedTuple):
    """How a step draws tokens. To a compiled step, `guided`, `top_k` and whether `temperature`
    and `top_p` are None are constants (another value: another graph); the values of the 0-d
    tensors are inputs, so a sweep over temperatures or top-p compiles nothing new."""

    guided: bool
    temperature: Tensor | None  # None: greedy
    top_k: int | None
    top_p: Tensor | None  # None: no nucleus


class ARDecodeEngine:
    """The sampling loop of one `ARTransformer`, with its compiled step.

    Args:
        model: the transformer it samples from (which keeps it: `ARTransformer.engine`).
    """

    def __init__(self, model: ARTransformer):
        self.model = model
        self._compiled: tuple[str, Callable] | None = None  # (mode, compiled `advance`)

    def __deepcopy__(self, memo: dict) -> ARDecodeEngine:
        # A copied model (an EMA copy) gets an engine of its own, without the compiled step,
        # which would sample from the original.
        return ARDecodeEngine(copy.deepcopy(self.model, memo))

    def sample(
        self,
        labels: Tensor | None,
        batch: int,
        steps: int,
        settings: SampleSettings,
        generator: torch.Generator | None = None,
    ) -> GeneratedCodes:
        """Draw `steps` tokens of `batch` samples, in eval mode (the training flag is restored).

        The caller (`ARTransformer.generate`) has checked every argument: the settings with
        `settings.check_for("ar", ...)`, guidance only with labels, steps L or (variable-length
        models) in [1, L].

        Args:
            labels: `(B,)` int64 classes of a conditional model, or None (its null class, or an
                unconditional model).
            batch: B.
            steps: tokens to draw.
            settings: how to draw them.
            generator: random source on the model's device; None uses the global one.

        Returns:
            `GeneratedCodes`: codes `(B, *token_shape)` in layout order (variable-length:
            `(B, steps)`, code 0 after a sample's end) and lengths `(B,)` int64.
        """
        model, compile_step = self.model, settings.compile
        device = model.head.weight.device
        # Scale 1 is 1 at every step of either schedule: no guidance, no doubled batch.
        guided = settings.cfg_scale != 1.0
        if guided:  # (2B,): the labels' rows, then as many null-class rows
            labels = torch.cat([labels, torch.full_like(labels, model.null_class)])
        rows = len(labels) if guided else batch
        temperature, top_p = settings.temperature, settings.top_p
        draw = _Draw(
            guided,
            None if temperature == 0 else torch.tensor(float(temperature), device=device),
            settings.top_k,
            None if top_p is None or top_p == 1 else torch.tensor(float(top_p), device=device),
        )

        was_training = model.training
        model.eval()
        try:
            advance = self.step_function(compile_step, device)
            model.allocate_cache(rows)
            empty = torch.zeros(rows, 0, dtype=torch.int64, device=device)
            logits = model._run(empty, labels, "prefill")[:, 0]  # (rows, V + 1)
            ids = torch.zeros(batch, steps, dtype=torch.int64, device=device)
            # 1-D: the tokens drawn (a prefix, or all L); other layouts always draw all of them
            extent = steps if model.spec.ndim == 1 else model.extent
            lengths = torch.full((batch,), extent, dtype=torch.int64, device=device)
            finished = torch.zeros(batch, dtype=torch.bool, device=device)
            scales = [
                cfg_scale_at(step, steps, settings.cfg_scale, settings.cfg_schedule)
                for step in range(steps)
            ]
            scales = torch.tensor(scales, device=device)  # (steps,) guidance scale per step
            position = torch.zeros((), dtype=torch.int64, device=device)  # the token drawn
            width, spans = (batch, model.vocab_size + 1), self.spans(steps)
            for step in range(steps):
                noise = None if temperature == 0 else draw_noise(width, device, generator)
                state = (logits, noise, scales, position, finished, lengths)
                if step + 1 == steps:  # the last token: nothing to feed
                    token, finished, lengths = self.choose(*state, draw)
                else:
                    if compile_step:
                        torch.compiler.cudagraph_mark_step_begin()
                    token, finished, lengths, logits = self._call(advance, state, draw, spans[step])
                    if compile_step:  # CUDA graphs free a step's outputs at the next step
                        finished, lengths, logits = (
                            finished.clone(),
                            lengths.clone(),
                            logits.clone(),
                        )
                ids[:, step] = token
                # A host sync only every 16 steps: stop once every row has ended.
                if model.variable_length and step % 16 == 15 and bool(finished.all()):
                    break
                position += 1
        finally:
            model.train(was_training)
            if not compile_step:
                model.free_cache()
        layout = model.layout if steps == model.max_tokens else SequenceLayout(model.spec, (steps,))
        # A clone: a compiled step's outputs are overwritten by the next call's replay.
        return GeneratedCodes(layout.unflatten(ids), lengths.clone())

    def choose(
        self,
        logits: Tensor,
        noise: Tensor | None,
        scales: Tensor,
        position: Tensor,
        finished: Tensor,
        lengths: Tensor,
        draw: _Draw,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw token `position` of every sample, with no host sync.

        Args:
            logits: `(rows, V + 1)` of token `position` (rows = 2B under guidance: the labels'
                rows, then the null class's).
            noise: `(B, V + 1)` from `draw_noise`, None when greedy.
            scales: `(steps,)` guidance scale of each step.
            position: 0-d int64, the token drawn.
            finished, lengths: `(B,)` whether each sample has ended, and its length.
            draw: how to draw.

        Returns:
            `(token, finished, lengths)`: `(B,)` each; a finished sample's token is 0.
        """
        model = self.model
        if draw.guided:
            cond, uncond = logits.float().chunk(2)  # (B, V + 1) each
            logits = cfg_logits(cond, uncond, scales.index_select(0, position.reshape(1)))
        if draw.temperature is None:
            token = logits.argmax(dim=-1)  # (B,)
        else:
            token = pick(logits, noise, draw.temperature, draw.top_k, draw.top_p)  # (B,)
        if model.variable_length:
            ended = token == model.end_id
            lengths = torch.where(ended & ~finished, position, lengths)
            finished = finished | ended
            token = token.masked_fill(finished, 0)  # padding after the end
        return token, finished, lengths

    def advance(
        self,
        logits: Tensor,
        noise: Tensor | None,
        scales: Tensor,
        position: Tensor,
        finished: Tensor,
        lengths: Tensor,
        draw: _Draw,
        span: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`choose`, then feed the token: `(token, finished, lengths, logits)`, the logits
        `(rows, V + 1)` of token `position + 1`, attending over cache slots `[0, span)`. One
        step of the loop, compiled whole (one graph per span)."""
        token, finished, lengths = self.choose(
            logits, noise, scales, position, finished, lengths, draw
        )
        inputs = torch.cat([token, token]) if draw.guided else token  # (rows,)
        return token, finished, lengths, self.model._decode(inputs[:, None], position, span)

    def spans(self, steps: int) -> list[int]:
        """The cache slots each of `steps` steps attends over: the drawn token at step t is fed
        at slot t + 1, so step t needs slots `[0, t + 2)`; rounded up to a quarter of the cache
        (in multiples of 8), so that the steps read 5/8 of the cache on average, not all of it,
        with 4 compiled graphs (below the recompile limit) rather than one per step."""
        slots = 1 + self.model.max_tokens
        quarter = 8 * math.ceil(slots / (8 * _SPANS))
        return [min(slots, quarter * math.ceil((step + 2) / quarter)) for step in range(steps)]

    def step_function(self, compile_step: bool | str, device: torch.device) -> Callable:
        """`advance`, or its compiled form (made once per mode and kept).

        Args:
            compile_step: False: eager; True: "reduce-overhead" (CUDA graphs) on CUDA,
                "default" elsewhere; a string: that `torch.compile` mode.
            device: the model's device.
        """
        if not compile_step:
            return self.advance
        mode = "reduce-overhead" if device.type == "cuda" else "default"  # CUDA graphs: CUDA
        mode = compile_step if isinstance(compile_step, str) else mode
        if self._compiled is None or self._compiled[0] != mode:
            # dynamic=False: each span gets its own static graph, not one with a symbolic size.
            compiled = torch.compile(self.advance, mode=mode, fullgraph=True, dynamic=False)
            # Each (span, batch, sampling settings) is one graph: a second batch size or setting
            # in one process would pass dynamo's default limit of 8 graphs, which raises under
            # fullgraph=True; this allows _COMBINATIONS of them.
            limit = _SPANS * _COMBINATIONS
            compiled = torch._dynamo.config.patch(recompile_limit=limit)(compiled)
            self._compiled = (mode, compiled)
        return self._compiled[1]

    def _call(self, advance: Callable, state: tuple, draw: _Draw, span: int):
        """`advance(*state, draw, span)`, with dynamo's recompile limit turned into an error
        that says what to do."""
        try:
            return advance(*state, draw, span)
        except torch._dynamo.exc.FailOnRecompileLimitHit as error:
            raise RuntimeError(
                f"compiled sampling has built graphs for {_COMBINATIONS} combinations of model, "
                "batch size and sampling settings (guidance, greedy, top_k, nucleus) in this "
                "process, the limit set for torch.compile; sample with compile=False "
                "(SampleSettings), or keep the batch size and top_k fixed (temperature, top_p "
                "and the guidance scale may vary freely)"
            ) from error
