"""What every command that runs a model needs, training or not: the device, model files opened onto it, prediction
and its metrics (MACs, calibration), the acceleration settings (precision, compile, CUDA graphs) and the processes of
a torchrun launch."""
