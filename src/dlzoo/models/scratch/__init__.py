"""A neuron and an MLP in plain NumPy, with hand-written backpropagation and gradient descent."""
