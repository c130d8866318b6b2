"""What a run shows: diagnostics, TensorBoard, every figure, the novelty measure."""
