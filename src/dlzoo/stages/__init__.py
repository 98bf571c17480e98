"""The pipeline stages: each loads its inputs, calls the library, writes its outputs atomically."""
