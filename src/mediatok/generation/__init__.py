"""Generators over token shards: autoregressive (`ar`) and masked (`masked`) transformers.

A generator knows only a `TokenSpec`, never a codec class (DESIGN.md § Layers).
"""
