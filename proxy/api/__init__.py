"""The audit REST API under /api/ (Django REST Framework)."""
