"""Members service: regions (tenants), GP enrolment, roles, practice capacity, erasure."""
