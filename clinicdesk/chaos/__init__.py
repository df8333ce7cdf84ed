"""Fault runs (`manage.py chaos`, `make chaos`): a PostgreSQL restart under load, a job cluster
killed with SIGKILL in the middle of escalation and notification work, and the same with the
Redis broker and three clusters. The pieces (process groups, a Redis server on loopback, a
webhook receiver that counts deliveries) are used by the command and by the test suite."""
