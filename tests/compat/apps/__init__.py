"""Small framework apps that ``tests/compat/test_frameworks.py`` runs as workers."""
