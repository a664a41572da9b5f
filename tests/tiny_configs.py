"""The tiny models the end-to-end tests build (seconds on a CPU), shared so that they stay one."""

from __future__ import annotations

# A 32×32 TiTok with 8 tokens of a 64-code VQ.
TITOK = {
    "image_size": 32,
    "patch_size": 8,
    "size": "custom",
    "width": 32,
    "depth": 1,
    "heads": 4,
    "num_tokens": 8,
    "token_dim": 6,
    "quantizer": {"kind": "vq", "options": {"codebook_size": 64}},
}

# A 16×16 FlexTok: 16 patches of 4×4, 8 registers of the default FSQ (64,000 codes), a 2-block
# encoder and flow decoder 32 wide.
FLEXTOK = {
    "image_size": 16,
    "patch_size": 4,
    "encoder_width": 32,
    "encoder_depth": 2,
    "encoder_heads": 4,
    "decoder_width": 32,
    "decoder_depth": 2,
    "decoder_heads": 4,
    "num_registers": 8,
}

# A 24 kHz, 75 tokens/s WavTokenizer (the default strides) with a 64-code VQ.
WAVTOKENIZER = {
    "hop_length": 320,
    "channels": 4,
    "latent_dim": 16,
    "encoder_attention_layers": 1,
    "decoder_dim": 16,
    "decoder_intermediate": 32,
    "decoder_layers": 1,
    "attention_heads": 2,
    "quantizer": {"kind": "vq", "options": {"codebook_size": 64}},
}

# A 16 kHz WavTokenizer with a hop of 8 samples (strides 2, 4) and a 64-code VQ: codes of a few
# hundred random samples, for the codec's own tests.
WAVTOKENIZER_16K = {
    "sample_rate": 16000,
    "hop_length": 8,
    "strides": [2, 4],
    "channels": 4,
    "latent_dim": 16,
    "decoder_dim": 32,
    "decoder_intermediate": 64,
    "decoder_layers": 2,
    "encoder_attention_layers": 1,
    "decoder_attention_layers": 1,
    "attention_window": 4,
    "attention_heads": 2,
    "quantizer": {"kind": "vq", "options": {"codebook_size": 64}},
}

# A one-layer generator (AR or masked).
GENERATOR = {"dim": 32, "depth": 1, "heads": 4}

# A 16×16 causal video tokenizer: time 4×, space 4× (two levels), one attention block over 2
# past latent frames, FSQ [5, 5, 5, 5] (625 codes); 9 frames give 3 × 4 × 4 codes.
CAUSAL_VIDEO = {
    "image_size": 16,
    "channels": 8,
    "channel_mult": [1, 2, 2],
    "temporal_compression": 4,
    "num_res_blocks": 1,
    "attention_layers": 1,
    "attention_heads": 2,
    "attention_window": 2,
    "latent_dim": 4,
    "quantizer": {"kind": "fsq", "options": {"levels": [5, 5, 5, 5]}},
}
