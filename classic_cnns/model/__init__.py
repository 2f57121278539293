"""The networks (LeNet-5, AlexNet) and a training recipe made real: optimizer, schedule, compiled model."""
