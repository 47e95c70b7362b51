"""Evaluation of models: metrics on images whose labels are known (the held-out images of a
training, or a project's tagged or boxed images), a chart of them, and the job that computes both.

    metrics.py   classification (accuracy, per-class precision/recall/F1/support, confusion
                 matrix) and detection (per-class precision/recall, mAP with pycocotools)
    chart.py     the PNG: confusion matrix (or per-class AP) and the training curves
    job.py       the `evaluate_model` job: images from the image service, predictions through
                 TF Serving, the report kept in the job, the chart in object storage
    service.py   the service's side: what may be evaluated, queuing, the JSON callers read
"""
