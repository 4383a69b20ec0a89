"""`berth`: a command-line client of Berth's Docker socket, built on docker-py.

Presentation only: every verb is a Docker Engine API call through docker-py, so the CLI can never
become a second path into the engine (and it drives dockerd just as well).
"""
