"""Local stand-ins for AWS services that moto does not cover."""
