"""Shared platform for the hecht services: plumbing only, no business rules."""
