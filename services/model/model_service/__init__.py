"""Model service: uploaded Keras/SavedModel models, served by TensorFlow Serving, used to classify
and detect objects in batches of images for the image and video services."""
