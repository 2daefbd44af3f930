"""User and item state shared by the services (Redis key schema and store interface)."""
