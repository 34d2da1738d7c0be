"""Object detection on the encoder contract: MONAI RetinaNet, box data, metrics and outputs."""
