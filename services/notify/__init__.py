"""Notify service: webhook subscriptions and deliveries for integrators, e-mail to GPs."""
