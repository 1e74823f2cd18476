"""Building blocks that tasks and methods both use, in a layer below both: layers
(``shifted_relu``, ``deep_linear``), ERM losses and rows (``erm_losses``, ``rows``), and
helpers for tensors sharded as DTensors (``dtensor``). Pure PyTorch; imports neither
``tasks`` nor ``methods``, so a task never needs a method's module to build its model."""
