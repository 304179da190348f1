"""Statistics for comparing models on test cases."""
