"""`doorkeeper bench ...`: the benchmark commands and their worker processes."""
