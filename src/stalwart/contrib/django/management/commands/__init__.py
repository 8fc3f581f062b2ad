"""``manage.py stalwart ...``."""
