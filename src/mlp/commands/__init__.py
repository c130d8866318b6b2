"""The commands that read what training made: eval, predict, runs, activations."""
