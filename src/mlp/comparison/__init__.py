"""mlp compare: the plan of runs, the summary, the findings and the report."""
