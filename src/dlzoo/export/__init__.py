"""Export: the trained model as ONNX, checked against it, registered in MLflow."""
