"""dlzoo: the classic deep-learning families as a reproducible MLOps pipeline."""
