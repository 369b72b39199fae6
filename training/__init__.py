"""Training: fit an anomaly detector on sensor CSVs and export one self-contained ONNX model.

The entry point is :mod:`training.train` (SageMaker script mode). Everything else is a pure, typed core:
``data`` (load / window), ``detector`` (fit / score), ``calibrate`` (threshold), ``export`` (ONNX graph).
"""
