"""The training run behind ``python -m emca_vis.train``, in small parts.

``options``      the command's options, checked as they are parsed
``data_order``   per-sample augmentation seeds and the global-batch sampler (resumable data order)
``optim``        optimiser and learning-rate schedule
``distributed``  process group set-up and sums over processes
``state``        the resume record and the ``resume/step-*`` states it is saved in
``artefacts``    what a run shows: metrics files, ``last`` / ``best`` checkpoints
``loop``         the run itself: epochs, validation, saving
``faults``       a test-only hook that kills the process at a named point
"""
