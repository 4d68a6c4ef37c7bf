"""Agreements service: mandated collaboration agreements, mandate votes, lifecycle scheduler."""
