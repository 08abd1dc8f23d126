"""Measurements that need no GPU: saved-tensor memory (``memory``), bytes and launches of a training step
(``traffic``), torch.compile's partition and kernels (``compiled``), host cost per launch (``host_cost``), which
tensors a kernel reads and writes (``kernel_access``) and the ops against PyTorch's own samples
(``pytorch_samples``)."""
