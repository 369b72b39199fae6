"""Greengrass v2 inference component: sensor samples -> windows -> ONNX score -> anomalies only.

This package is also the component artifact (zipped as ``anomaly_detector.zip``), so it uses relative
imports only and depends on nothing but onnxruntime, numpy, awsiotsdk, paho-mqtt and the standard library.
"""

__version__ = "0.1.0"
