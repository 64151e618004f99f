"""The tokenrota server: routes, use cases, SQL, migrations and the `tokenrota` command line.

Installed with the `server` extra (`pip install "tokenrota[server]"`).
"""
