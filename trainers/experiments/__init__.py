"""Entry points of the review's experiments."""
