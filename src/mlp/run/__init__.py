"""The run folder as a format: its writer, its reader, the checkpoint schema."""
