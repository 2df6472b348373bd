"""Training: the loop, optimizers and schedule, checkpoints, data windows, devices."""
