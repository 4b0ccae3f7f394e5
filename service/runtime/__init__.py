"""Running the service: configuration, database, tables, server settings and the CLI."""
