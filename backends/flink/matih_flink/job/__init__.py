"""The PyFlink jobs: run by the Flink environment's Python, never imported by the ml-service."""
