"""The portal: the server-rendered web front door for GPs (a backend-for-frontend).

It holds no domain data: see docs/PORTAL.md for its contract with the services.
"""
