"""Exec/Attach/PortForward streaming server (SPDY/3.1 and WebSocket)."""
