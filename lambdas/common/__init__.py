"""Helpers more than one Lambda function uses; every image that runs them COPYs this folder."""
