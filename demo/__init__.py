"""The local end-to-end demo: train → ONNX → publish → edge inference → only anomalies forwarded."""
