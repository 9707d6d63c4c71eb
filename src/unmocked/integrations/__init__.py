"""Glue between unmocked's databases and the frameworks users test with; each imports lazily."""
