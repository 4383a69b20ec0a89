"""Docker Engine API front end: REST over a unix socket, thin handlers over the engine."""
