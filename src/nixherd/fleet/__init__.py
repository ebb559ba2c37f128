"""Fleet-wide work: evaluating a flake's nodes, the apply pipeline and its rollout waves,
running an operation over many nodes, and the run's report."""
