"""`manage.py load`: a clinic morning at ten times the demo's intake rate, against gunicorn and
a job cluster on a PostgreSQL of its own, driven by Locust; then checks that nothing was lost,
nobody got a task twice and nobody went over capacity. See docs/reliability.md.

- `clinic`: the 50-person clinic the run works in, its integration client and its intake items
- `pages`: reading the work pages' HTML the way a browser user would (no Locust, no Django)
- `locustfile`: the staff and the integrations (run by Locust, in its own process)
- `checks`: the post-run checks, plain functions over the database and the run's files
- `report`: Locust's CSV turned into the per-page table
- `runner`: starts and stops every process of a run
"""
