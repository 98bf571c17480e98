"""ONNX Runtime variants of exported models: graph-optimised and INT8, gated on validation."""
