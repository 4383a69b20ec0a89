"""The engine beneath both front ends (CRI and the Docker API)."""
