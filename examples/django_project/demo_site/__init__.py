"""A small Django project using stalwart's app: breakers from settings, health views."""
