"""Training models on the server from a project's tagged images (`method=create`): what the
trainer worker runs. Three names, three roles:

    model_service/trainings.py  the model service's side (API process): checks a request, queues
                                the training job, reads its status and progress, cancels, shows the log
    model_service/trainer.py    the trainer worker process (`python -m model_service.trainer`):
                                claims training jobs and hands each to this package
    model_service/training/     this package: the parts of one training (parameters, dataset, recipes,
                                sandbox, the job's handler), run by the worker

The model service queues a training job; the trainer worker (`python -m model_service.trainer`)
claims it and, module by module:

    params.py         the request's training parameters: defaults, limits, validation
    dataset.py        the project's images -> data_dir/<tag>/<image_id>.<ext>, labels = sorted tags
    recipe.py         the built-in recipes (transfer learning from EfficientNet-Lite0; a small
                      CNN from scratch), used when no script is uploaded
    split.py          the held-out split: stratified, seeded, recorded by the trainer
    features.py       the transfer-learning backbone's location and the cache of its features
    sandbox.py        runs a training (script or recipe) in a confined child process, with limits,
                      bounded logs and progress; says how it ended
    confine.py        the child's first step: resource limits, then bubblewrap (bwrap) with only
                      what the training needs; an unprivileged user
    script_runner.py  the confined child's last step: loads the script and calls `train`
    job.py            the worker's handler of training jobs: dataset, sandbox, registration

TensorFlow is imported only inside the confined child (the recipe and scripts), never by the
trainer itself.
"""
