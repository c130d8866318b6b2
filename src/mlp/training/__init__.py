"""Training: the loop (fit), its state, signals, distributed launch, optimizer and schedule."""
