"""Offline checks of deploy/ (compose, Kubernetes, Dockerfile, gunicorn, topics).

Fast and without network: nothing here starts a container or talks to a
cluster, and no fixture of tests/conftest.py (the local stack) is used.
"""
