"""Deploy by replacement: desired state, observation, a pure planner, and the executor."""
