"""What the runs tell: the diagnosis of the notebook's AlexNet, the claims grid and its statistics."""
