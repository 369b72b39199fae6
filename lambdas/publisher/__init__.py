"""Publisher Lambda: turns a trained model in S3 into a Greengrass component version and a deployment."""
