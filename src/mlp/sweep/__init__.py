"""mlp sweep: the search space, the Optuna study, the workers and the leaderboard."""
