"""Networks and their registry (see :mod:`mrimaster.models.registry`)."""
