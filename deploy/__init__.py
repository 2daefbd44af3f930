"""Deployment assets (Dockerfiles, kustomize tree) and their validation driver."""
