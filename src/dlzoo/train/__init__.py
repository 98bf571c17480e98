"""Train: fit one experiment's family on its data, save the model, log the run."""
