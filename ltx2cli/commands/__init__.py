"""One module per CLI command; each parses, validates, calls the core and prints."""
