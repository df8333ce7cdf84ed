"""The REST API (djangorestframework): intake for other systems, tasks and queues for both."""
