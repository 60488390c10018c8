"""The official Deepomatic client's side of benches/rounds.rs.

Usage: rounds_official.py BASE_URL FIRST_ID COUNT TIMEOUT_S

Builds `Task` objects for ids FIRST_ID..FIRST_ID+COUNT (no request: `retrieve`
only names them), prints "ready", waits for one stdin line holding the run's
start as Unix time, then calls `client.Task.batch_wait(tasks=..., timeout=...)`
with its default schedule. Each of its rounds lists the pending ids (100 per
page, following `next`). A task counts as seen when the round that first read
it finished ends (that is when the client knows it). Prints one JSON line:
{"success": n, "error": n, "pending": n, "seen_ms": {id: ms after the start}}.
"""

import json
import sys
import time

from deepomatic.api.client import Client
from deepomatic.api.resources.task import Task


def main():
    base_url, first_id, count, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    client = Client(host=base_url, api_key="bench")
    tasks = [client.Task.retrieve(str(first_id + i)) for i in range(count)]
    seen_ms = {}
    start = [0.0]

    refresh = Task._refresh_tasks_status

    # Times each round: the tasks it moved out of `pending` were seen at its end.
    def timed_refresh(self, pending_tasks, success_tasks, error_tasks, positions):
        done_before = len(success_tasks) + len(error_tasks)
        result = refresh(self, pending_tasks, success_tasks, error_tasks, positions)
        at_ms = (time.time() - start[0]) * 1e3
        for _, task in (success_tasks + error_tasks)[done_before:]:
            seen_ms[task.pk] = at_ms
        return result

    Task._refresh_tasks_status = timed_refresh
    print("ready", flush=True)
    start[0] = float(sys.stdin.readline())
    pending, success, error = client.Task.batch_wait(tasks=tasks, timeout=timeout)
    print(json.dumps({"success": len(success), "error": len(error), "pending": len(pending), "seen_ms": seen_ms}), flush=True)


if __name__ == "__main__":
    main()
