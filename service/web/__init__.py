"""The web layer: the HTTP API, the console, schemas, problems, metrics and logs."""
