"""Console scripts; each parses arguments and calls the library."""
