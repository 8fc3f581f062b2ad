"""A Django app for the Django tests: models that transactions are tested on."""
