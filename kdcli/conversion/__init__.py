"""Conversions of model files: ``export`` (ONNX, a folder timm loads) and ``importer`` (other people's PyTorch
checkpoints into kdcli model files), each checked before it is kept."""
