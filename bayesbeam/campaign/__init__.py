"""Campaigns through the queue: ``bayesbeam campaign run CONFIG`` (``cli``), the loop (``runner``), the record of
its decisions in the catalog (``record``) and its configuration file (``config``)."""
