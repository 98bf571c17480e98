"""Serving: the model repository over the Open Inference Protocol v2, with ONNX Runtime."""
