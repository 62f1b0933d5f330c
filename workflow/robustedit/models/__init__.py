"""Model description, architecture adapters, conversion and loading."""
