"""How the OpenAPI schema (drf-spectacular) describes our authentication.

Imported by `queues.api.views`, so the extension is registered before the schema is built.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ClientTokenScheme(OpenApiAuthenticationExtension):
    target_class = "queues.api.authentication.ClientTokenAuthentication"
    name = "clientToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "An integration client's token, sent as `Token <token>` "
            "(`python manage.py create_integration_client` prints it once).",
        }


# --- links: how an answer's task id leads to the next call ---------------------------------

# The operations that answer with a task (its `id` at the top of the body), and where.
TASK_ANSWERS = {
    "intake_submit": ("200", "201"),
    "tasks_next": ("200",),
    "tasks_retrieve": ("200",),
}
TASK_LIST_ANSWERS = {"tasks_list": ("200",)}
ACTION_PREFIX = "tasks_"
NOT_ACTIONS = {"tasks_list", "tasks_next", "tasks_retrieve"}


def _link_name(operation_id: str) -> str:
    action = operation_id.removeprefix(ACTION_PREFIX)
    return "GetTask" if action == "retrieve" else action.capitalize()


def add_task_links(result, generator, request, public):
    """drf-spectacular postprocessing hook: OpenAPI links from every answer that names a task
    to the operations on that task (read it, and each action), so that clients and generated
    tests can follow a task from intake to resolution."""
    operations = {
        operation["operationId"]: operation
        for path_item in result.get("paths", {}).values()
        for operation in path_item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    consumers = [
        operation_id
        for operation_id in operations
        if operation_id == "tasks_retrieve"
        or (operation_id.startswith(ACTION_PREFIX) and operation_id not in NOT_ACTIONS)
    ]
    producers = {
        **{op: (codes, "$response.body#/id") for op, codes in TASK_ANSWERS.items()},
        **{op: (codes, "$response.body#/results/0/id") for op, codes in TASK_LIST_ANSWERS.items()},
        # Every action answers with the task as it is now.
        **{op: (("200",), "$response.body#/id") for op in consumers if op != "tasks_retrieve"},
    }
    for producer, (codes, task_id) in producers.items():
        operation = operations.get(producer)
        if operation is None:
            continue
        for code in codes:
            response = operation.get("responses", {}).get(code)
            if response is None:
                continue
            response["links"] = {
                _link_name(consumer): {
                    "operationId": consumer,
                    "parameters": {"task_id": task_id},
                    "description": f"The task of this answer: `{consumer}`.",
                }
                for consumer in consumers
            }
    return result
