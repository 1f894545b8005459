"""Schemathesis hooks for the query API fuzz run (loaded via SCHEMATHESIS_HOOKS)."""
import schemathesis


@schemathesis.hook
def map_query(context, query):
    # Read-your-writes waits are valid up to 30 s; keep the fuzz run short by capping the
    # valid ones (the 30 s maximum itself is still tried by the coverage phase).
    if query and isinstance(query.get("timeout_ms"), int) and 0 <= query["timeout_ms"] <= 30000:
        query["timeout_ms"] = min(query["timeout_ms"], 200)
    return query
