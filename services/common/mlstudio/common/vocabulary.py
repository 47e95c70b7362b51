"""The words the services share, defined once: project types (a model's type is its project's)
and model statuses. Plain strings rather than `enum.Enum` members, because they are what MongoDB
stores, JSON and protobuf carry and the public API shows (../shared/API.md): a comparison with a
stored or received value needs no conversion.
"""
from __future__ import annotations

CLASSIFICATION = "Classification"
DETECTION = "Detection"
PROJECT_TYPES = (CLASSIFICATION, DETECTION)
MODEL_TYPES = PROJECT_TYPES

# A model's status. Uploaded and built-in models: Pending while registered, then Trained. Models
# trained on the server: Pending (queued), Training, then Trained or Failed. Failed also marks a
# model TF Serving can no longer serve.
PENDING = "Pending"
TRAINING = "Training"
TRAINED = "Trained"
FAILED = "Failed"
MODEL_STATUSES = (PENDING, TRAINING, TRAINED, FAILED)
