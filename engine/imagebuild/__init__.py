"""Dockerfile builds: parse, context, cache, steps, layers (the classic builder's protocol)."""
