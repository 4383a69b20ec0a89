"""Our own kubelet-style streaming client: SPDY/3.1 and WebSocket, exec/attach/port-forward."""
