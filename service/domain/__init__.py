"""Pure rules and types: resolution, validation, time, events, domain errors."""
