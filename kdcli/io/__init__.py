"""Files kdcli reads and writes: model files and run checkpoints; every write atomic, nothing replaced that kdcli did
not write."""
