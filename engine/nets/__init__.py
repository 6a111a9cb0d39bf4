"""The networks: weights, image preprocessing, feature taps, vgg16-fashion's head.

This file stays torch-free: the CLI and variant sets read these names without
loading torch.
"""

# The frozen conv map vgg16-fashion's new fc6 can read (engine.nets.fashion_head);
# pool5 is the article's.
FASHION_INPUTS = ("pool4", "pool5")
DEFAULT_FASHION_INPUT = "pool4"
# The VGG16 conv-trunk tap each input is read from (the map before that pool).
TRUNK_TAPS = {"pool4": "conv4", "pool5": "conv"}
