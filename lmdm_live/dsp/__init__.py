"""Signal code shared by the live inputs, training and evaluation: plain numpy and scipy, no model."""
