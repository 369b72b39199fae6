"""AWS Lambda functions of the edge ML platform, one package per function."""
