"""The networks and the Keras models that train them.

- `resnet`, `conv`, `batch_norm`: the encoder (ResNet v1, width multipliers, selective
  kernels, CIFAR stem) and its two custom layers.
- `heads`: projection head and linear classifier.
- `step_models`: `PretrainModel` and `ClassifierModel`, each with its train step.
- `builders`: all of the above from a run's `Config`.
"""
