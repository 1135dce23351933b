"""Deep domain-generalization baselines."""
