"""The process on its host: logging, systemd readiness, network interfaces, the errors that end a
start, and where the shipped data lives."""
