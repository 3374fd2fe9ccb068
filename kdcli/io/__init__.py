"""Files kdcli reads and writes: model files, run checkpoints, other people's checkpoints; all writes atomic."""
