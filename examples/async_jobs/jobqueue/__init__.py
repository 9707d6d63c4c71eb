"""A job queue in PostgreSQL: an API enqueues jobs, concurrent workers claim and run them."""
